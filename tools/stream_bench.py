"""Pushed updates against polling alone: how old is the snapshot P3.3 judges a plan by, and
how long after a fill does the snapshot show it. Not a test; a measuring tool.

    .venv/bin/python tools/stream_bench.py [--seconds 20] [--poll 5] [--exchange sim|binance]
    [--json]

For each mode (``polling``: the poller alone, every ``--poll`` s; ``pushed``: the poller and
the user stream, touch every 0.5 s), on a private embedded server and the simulated
exchange (or the fake Binance through ccxt, ``--exchange binance``):

* **snapshot age at judgement**: every 50 ms (a plan arriving), now − the snapshot's
  ``ts_epoch``; p50 / p99 / max;
* **fill → snapshot**: at random times a reduce-only fill made outside the chain (as a
  triggered stop is: nothing asks the poller for a targeted poll), and the time until the
  snapshot shows the new amount; p50 / p99 / max. (A fill made by the chain is also seen by
  a targeted poll once the ledger applies its result; that path is the same in both modes.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakebinance

from permitchain.embedded import EmbeddedServer
from permitchain.exchange.base import Exchange
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.stream import SimUserStream, UserStream
from permitchain.keys import Keys
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.position_brain.pushed import PushedSnapshots
from permitchain.runtime.clock import SystemClock
from permitchain.store import async_client

SYM = "BTCUSDT"
SAMPLE_S = 0.05
START = Decimal(1000)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50_ms": round(pct(xs, 0.5) * 1000, 1),
        "p99_ms": round(pct(xs, 0.99) * 1000, 1),
        "max_ms": round(max(xs) * 1000, 1) if xs else float("nan"),
        "mean_ms": round(statistics.fmean(xs) * 1000, 1) if xs else float("nan"),
    }


async def exchange_for(
    kind: str, r: Any, keys: Keys, pushed_mode: bool
) -> tuple[Exchange, UserStream | None, Any]:
    """The exchange, its user stream (pushed mode) and the fake Binance (or None)."""
    if kind == "binance":
        # imported here: ccxt is slow to import and only this mode needs it
        from tests.fakebinance import API_KEY, API_SECRET, FakeBinance  # noqa: PLC0415

        from permitchain.exchange.binance import BinanceExchange  # noqa: PLC0415
        from permitchain.exchange.binance_stream import BinanceUserStream  # noqa: PLC0415

        fake = FakeBinance()
        fake.start()
        fake.add_symbol(SYM, step_size="0.001", min_qty="0.001", min_notional="0", price="100")
        fake.set_position(SYM, str(START))
        ex = BinanceExchange(API_KEY, API_SECRET, demo=True, base_url=fake.url)
        stream = BinanceUserStream(API_KEY, API_SECRET, demo=True, base_url=fake.url)
        return ex, stream if pushed_mode else None, fake
    sim = SimExchange(r, keys)
    await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", min_notional="0")
    await sim.set_position(SYM, START, Decimal(100))
    return sim, SimUserStream(r, keys) if pushed_mode else None, None


async def sample(
    r: Any, keys: Keys, ex: Exchange, seconds: float, poll_s: float
) -> tuple[list[float], list[float]]:
    """Snapshot ages every 50 ms; fills made at random times and how long until seen."""
    ages: list[float] = []
    fills: list[float] = []
    amt, n = START, 0
    rng = random.Random(7)
    t_end = time.monotonic() + seconds
    next_fill = time.monotonic() + 1.0
    pending: tuple[Decimal, float] | None = None
    while time.monotonic() < t_end:
        h = await r.hmget(keys.snapshot(SYM), ["ts_epoch", "position_amt"])
        ages.append(time.time() - float(h[0]))
        if pending is not None and Decimal(h[1]) == pending[0]:
            fills.append(time.monotonic() - pending[1])
            pending = None
            next_fill = time.monotonic() + rng.uniform(0.2, poll_s)  # not phase-locked
        if pending is None and time.monotonic() >= next_fill:
            n += 1
            amt -= Decimal(1)
            t0 = time.monotonic()
            await ex.place_reduce_only_market(SYM, "SELL", Decimal(1), f"pc-bench{n:06d}")
            pending = (amt, t0)
            while time.monotonic() - t0 < 1.0:  # a pushed fill shows within ms: look often
                h = await r.hmget(keys.snapshot(SYM), ["position_amt"])
                if Decimal(h[0]) == amt:
                    fills.append(time.monotonic() - t0)
                    pending = None
                    break
                await asyncio.sleep(0.002)
            next_fill = time.monotonic() + rng.uniform(0.2, poll_s)
        await asyncio.sleep(SAMPLE_S)
    return ages, fills


async def one_mode(
    url: str, pushed_mode: bool, seconds: float, poll_s: float, kind: str
) -> dict[str, Any]:
    keys = Keys(f"sbench{uuid.uuid4().hex[:8]}")
    r = async_client(url)
    ex, stream, fake = await exchange_for(kind, r, keys, pushed_mode)
    poller = SnapshotPoller(r, keys, ex, SystemClock(), allow_list=[SYM], poll_interval_s=poll_s)
    await poller.poll_once()  # the snapshot exists before anything is sampled
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(poller.run(stop))]
    try:
        if stream is not None:
            pushed = PushedSnapshots(poller, stream, SystemClock(), touch_s=0.5)
            tasks.append(asyncio.ensure_future(pushed.run(stop)))
            await asyncio.wait_for(pushed.up.wait(), 30)
        ages, fills = await sample(r, keys, ex, seconds, poll_s)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ex.close()
        if fake is not None:
            fake.stop()
        await r.aclose()
    return {
        "mode": "pushed" if pushed_mode else "polling",
        "exchange": kind,
        "poll_interval_s": poll_s,
        "snapshot_age": summary(ages),
        "fill_to_snapshot": summary(fills),
    }


async def main(seconds: float, poll_s: float, kind: str) -> list[dict[str, Any]]:
    server = EmbeddedServer(prefer_path=True).start()
    try:
        return [await one_mode(server.url, m, seconds, poll_s, kind) for m in (False, True)]
    finally:
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--poll", type=float, default=5.0, help="POLL_INTERVAL_S")
    ap.add_argument("--exchange", choices=["sim", "binance"], default="sim")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(main(a.seconds, a.poll, a.exchange))
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{'mode':8} {'exchange':8} {'what':18} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} "
            f"{'max ms':>9}"
        )
        for row in out:
            for what in ("snapshot_age", "fill_to_snapshot"):
                s = row[what]
                print(
                    f"{row['mode']:8} {row['exchange']:8} {what:18} {s['n']:>5} "
                    f"{s['p50_ms']:>9} {s['p99_ms']:>9} {s['max_ms']:>9}"
                )
