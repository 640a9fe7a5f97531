"""Pushed updates against polling alone, measured on real plans through the chain: how old
the snapshot was when P3.3 judged each plan, and how long after the exchange filled a plan's
order P3.3's ledger reflected it. Not a test; a measuring tool.

    .venv/bin/python tools/stream_bench.py [--plans 30] [--poll 5] [--exchange sim|binance|both]
    [--json]

For each exchange (the simulated exchange, or the fake Binance of ``tests/fakebinance.py``
on 127.0.0.1 through the real ccxt and ccxt.pro clients) and each mode (``polling``:
``PUSHED_UPDATES=false``, the poller alone every ``--poll`` s; ``pushed``: the poller and
the user stream), the chain's gate services run as separate processes (planner and
executor, governor, P3.3; ``permitchain.chain.Chain``) on a private embedded server. One
symbol, a long position whose ledger agrees with the exchange; ``--plans`` quarter closes
(``PARTIAL_25`` proposals, each its own plan), one after another, each after a random pause
of 0.2 s … ``--poll`` s after the previous result (so plans are not phase-locked to the
poll). Read afterwards from what the chain itself recorded:

* **snapshot age at judgement**: the ``snapshot_age_sec`` of each P3.3 permit (the audit
  entry of its decision; the same value ``p33_snapshot_age_at_judgement_seconds`` observes);
* **fill → ledger**: the exchange's fill time of the plan's order (the sim's order record
  ``created_at``; the fake Binance's ``updateTime``, ms) to P3.3's ``LEDGER_APPLY`` audit
  entry for that plan (its ``ts``: when ``ledger_apply.lua`` wrote the new amount).

Every time is the same host's wall clock. Why a tool and not a ``permitchain bench`` phase:
the fake Binance lives with the tests (``tests/fakebinance.py``), which the installed
package does not carry, and a run takes minutes of mostly idle waiting between plans.
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

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal, make_plan_id
from permitchain.embedded import EmbeddedServer
from permitchain.exchange.base import Exchange
from permitchain.exchange.sim import SimExchange
from permitchain.position_brain.state import LAYER as P33_LAYER
from permitchain.store import AsyncRedis, async_client

SYM = "BTCUSDT"
POSITION = "1000"  # 30 quarter closes leave 0.18: far above the step
GATE_SERVICES = ("apply-layer", "governor", "position-brain")
RESULT_WAIT_S = 30.0
WHAT = ("snapshot_age_at_judgement", "fill_to_ledger", "outside_fill_to_snapshot")


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


async def seed(r: AsyncRedis, keys: Keys, kind: str) -> None:
    """The position on the sim (the fake Binance is seeded by :func:`start_fake`) and a
    ledger that agrees with it."""
    if kind == "sim":
        sim = SimExchange(r, keys)
        await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", min_notional="0")
        await sim.set_position(SYM, Decimal(POSITION), Decimal(100))
        await sim.set_price(SYM, Decimal(101))
    await r.hset(
        keys.ledger(SYM),
        mapping={"last_known_amt": POSITION, "last_known_side": "LONG", "epoch": "0"},
    )


def start_fake() -> Any:
    # imported here: only this exchange needs the test package
    from tests.fakebinance import FakeBinance  # noqa: PLC0415

    fake = FakeBinance()
    fake.start()
    fake.add_symbol(SYM, step_size="0.001", min_qty="0.001", min_notional="0", price="101")
    fake.set_position(SYM, POSITION, entry_price="100")
    fake.set_price(SYM, "101")
    return fake


def exchange_env(kind: str, fake: Any) -> dict[str, str]:
    if kind == "sim":
        return {"EXCHANGE": "sim"}
    from tests.fakebinance import API_KEY, API_SECRET  # noqa: PLC0415

    return {
        "EXCHANGE": "binance-demo",
        "BINANCE_BASE_URL": fake.url,
        "BINANCE_API_KEY": API_KEY,
        "BINANCE_API_SECRET": API_SECRET,
    }


async def run_plans(
    r: AsyncRedis, keys: Keys, n: int, poll_s: float, rng: random.Random
) -> dict[str, dict[str, str]]:
    """``n`` quarter closes one after another; each plan's result by plan id."""
    results: dict[str, dict[str, str]] = {}
    last = "$"
    for i in range(1, n + 1):
        p = Proposal(
            proposal_id=f"sb-{i}",
            symbol=SYM,
            action="PARTIAL_25",
            kill_score=Decimal("0.9"),
            position_epoch=0,
            tranche=i,
            ts_epoch=time.time(),
            source="bench",
        )
        plan_id = make_plan_id(SYM, "PARTIAL_25", 0, i)
        if last == "$":
            info = (
                await r.xinfo_stream(keys.result_stream)
                if await r.exists(keys.result_stream)
                else None
            )
            last = (info or {}).get("last-generated-id") or "0-0"
        await r.xadd(keys.proposal_stream, p.to_fields())
        deadline = time.monotonic() + RESULT_WAIT_S
        while plan_id not in results:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for plan {plan_id} in {RESULT_WAIT_S:g} s")
            resp = await r.xread({keys.result_stream: last}, block=500, count=100)
            for _s, entries in resp or []:
                for entry_id, f in entries:
                    last = entry_id
                    results[f.get("plan_id", "")] = f
        await asyncio.sleep(rng.uniform(0.2, poll_s))
    return results


async def outside_fills(
    r: AsyncRedis, keys: Keys, fake: Any, n: int, poll_s: float, rng: random.Random
) -> list[float]:
    """``n`` reduce-only fills made on the exchange outside the chain (as a triggered stop
    is), each after a random pause: how long until P3.3's snapshot shows the new amount."""
    if fake is not None:
        from tests.fakebinance import API_KEY, API_SECRET  # noqa: PLC0415

        from permitchain.exchange.binance import BinanceExchange  # noqa: PLC0415

        ex: Exchange = BinanceExchange(API_KEY, API_SECRET, demo=True, base_url=fake.url)
    else:
        ex = SimExchange(r, keys)
    seen: list[float] = []
    try:
        for i in range(1, n + 1):
            await asyncio.sleep(rng.uniform(0.2, poll_s))
            amt = Decimal(await r.hget(keys.snapshot(SYM), "position_amt") or "0")
            qty = (amt / 4).quantize(Decimal("0.001"))
            t0 = time.time()
            await ex.place_reduce_only_market(SYM, "SELL", qty, f"pc-outside{i:04d}")
            while time.time() - t0 < 2 * poll_s + 5:
                now = await r.hget(keys.snapshot(SYM), "position_amt")
                if now is not None and Decimal(now) == amt - qty:
                    seen.append(time.time() - t0)
                    break
                await asyncio.sleep(0.002)
    finally:
        await ex.close()
    return seen


async def fill_times(
    r: AsyncRedis, keys: Keys, fake: Any, results: dict[str, dict[str, str]]
) -> dict[str, float]:
    """Plan id → when the exchange filled its order (epoch s)."""
    out: dict[str, float] = {}
    if fake is not None:
        by_id = {o["clientOrderId"]: o for o in fake.orders(SYM)}
        for pid, f in results.items():
            o = by_id.get(f.get("client_order_id", ""))
            if o is not None and o["status"] == "FILLED":
                out[pid] = int(o["updateTime"]) / 1000
        return out
    for pid, f in results.items():
        h = await r.hgetall(keys.sim_order(SYM, f.get("client_order_id", "")))
        if h.get("status") == "FILLED":
            out[pid] = float(h["created_at"])
    return out


async def read_audit(
    r: AsyncRedis, keys: Keys
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """From P3.3's audit entries: plan id → snapshot age at its judgement, plan id → when its
    result reached the ledger, and the count of each P3.3 decision and reason."""
    ages: dict[str, float] = {}
    ledger_at: dict[str, float] = {}
    decisions: dict[str, int] = {}
    for _i, f in await r.xrange(keys.decisions):
        if f.get("layer") != P33_LAYER:
            continue
        ctx = json.loads(f.get("context") or "{}")
        if f["decision"] == "LEDGER_APPLY":
            ledger_at[f["plan_id"]] = float(f["ts"])
        elif f["decision"] in ("ALLOW", "DENY"):
            key = f"{f['decision']} {f['reason']}"
            decisions[key] = decisions.get(key, 0) + 1
            age = (ctx.get("permit") or {}).get("snapshot_age_sec")
            if age is not None:
                ages[f["plan_id"]] = float(age)
    return ages, ledger_at, decisions


async def measure(
    url: str, keys: Keys, fake: Any, plans: int, outside_n: int, poll_s: float
) -> dict[str, Any]:
    r = async_client(url)
    try:
        results = await run_plans(r, keys, plans, poll_s, random.Random(7))
        fills = await fill_times(r, keys, fake, results)
        ages, ledger_at, decisions = await read_audit(r, keys)
        outside = await outside_fills(r, keys, fake, outside_n, poll_s, random.Random(11))
    finally:
        await r.aclose()
    to_ledger = [ledger_at[p] - fills[p] for p in fills if p in ledger_at]
    judged = [ages[p] for p in results if p in ages]
    statuses: dict[str, int] = {}
    for f in results.values():
        statuses[f.get("status", "?")] = statuses.get(f.get("status", "?"), 0) + 1
    return {
        "snapshot_age_at_judgement": summary(judged),
        "judged_ages_ms": [round(a * 1000) for a in judged],  # plan by plan, in order
        "fill_to_ledger": summary(to_ledger),
        "outside_fill_to_snapshot": summary(outside),
        "results": statuses,
        "p33_decisions": decisions,
    }


def one_mode(
    url: str, kind: str, pushed: bool, plans: int, outside: int, poll_s: float
) -> dict[str, Any]:
    prefix = f"sbench{uuid.uuid4().hex[:8]}"
    fake = start_fake() if kind == "binance" else None
    env = {
        "APPLY_MODE": "testnet",
        "COOLDOWN_S": "0",
        "LOG_LEVEL": "WARNING",
        "METRICS_PORT": "0",
        "KEY_PREFIX": prefix,
        "ALLOW_LIST_SYMBOLS": SYM,
        "POLL_INTERVAL_S": str(poll_s),
        "PUSHED_UPDATES": str(pushed).lower(),
        **exchange_env(kind, fake),
    }
    try:
        with Chain(env, redis_url=url) as chain:
            r = async_client(url)

            async def do_seed() -> None:
                try:
                    await seed(r, chain.keys, kind)
                finally:
                    await r.aclose()

            asyncio.run(do_seed())
            chain.start(GATE_SERVICES)
            chain.wait_ready(GATE_SERVICES)
            time.sleep(2 * poll_s if not pushed else 1.0)  # a first poll, the stream up
            out = asyncio.run(measure(url, chain.keys, fake, plans, outside, poll_s))
    finally:
        if fake is not None:
            fake.stop()
    return {
        "exchange": kind,
        "mode": "pushed" if pushed else "polling",
        "poll_interval_s": poll_s,
        "plans": plans,
        **out,
    }


def main(plans: int, outside: int, poll_s: float, kinds: list[str]) -> list[dict[str, Any]]:
    server = EmbeddedServer(prefer_path=True).start()
    try:
        rows = []
        for kind in kinds:
            for pushed in (False, True):
                print(f"… {kind} {'pushed' if pushed else 'polling'}", file=sys.stderr)
                rows.append(one_mode(server.url, kind, pushed, plans, outside, poll_s))
        return rows
    finally:
        server.stop()


def render(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'exchange':8} {'mode':8} {'what':26} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'max ms':>9}  results"
    )
    for row in rows:
        for what in WHAT:
            s = row[what]
            res = ", ".join(f"{k} {v}" for k, v in sorted(row["results"].items()))
            print(
                f"{row['exchange']:8} {row['mode']:8} {what:26} {s['n']:>4} "
                f"{s['p50_ms']:>9} {s['p99_ms']:>9} {s['max_ms']:>9}  {res}"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plans", type=int, default=30, help="plans per exchange and mode")
    ap.add_argument("--outside", type=int, default=10, help="fills outside the chain")
    ap.add_argument("--poll", type=float, default=5.0, help="POLL_INTERVAL_S")
    ap.add_argument("--exchange", choices=["sim", "binance", "both"], default="both")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    chosen = ["sim", "binance"] if a.exchange == "both" else [a.exchange]
    out = main(a.plans, a.outside, a.poll, chosen)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        render(out)
