"""In-process CPU harness for the apply-layer: planner and executor handlers on a private
Redis, CPU time (time.process_time) per plan. Not a test; a measuring tool.

    redis-server --port 7412 --save '' --daemonize yes
    .venv/bin/python tools/apply_cpu.py --url redis://127.0.0.1:7412/0 -n 2000 --reps 5
    [--profile planner|executor]  (cProfile of the first rep: by tottime, then cumulative)
    [--sl]  (every other plan also moves the stop)  [--unsigned]  (no permit keys)
    redis-cli -p 7412 shutdown nosave

Before/after on a busy machine: run the two trees interleaved, e.g.
``PYTHONPATH=<other checkout>/src .venv/bin/python /tmp/apply_cpu.py`` (a copy of this file)
against this tree's, several times, and compare the minimum and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

import uvloop

from permitchain.apply_layer.executor import Executor
from permitchain.apply_layer.planner_service import Planner
from permitchain.contract.keys import Keys
from permitchain.contract.models import SCHEMA, GovernorPermit, P33Allow, Plan
from permitchain.contract.settings import Settings
from permitchain.contract.signing import sign
from permitchain.exchange.sim import SimExchange
from permitchain.runtime.clock import SystemClock
from permitchain.store import async_client

SYM = "BTCUSDT"
GOV_KEY, P33_KEY = "gov-secret-key-0123456789abcdef", "p33-secret-key-0123456789abcdef"


def proposal(i: int, now: float, sl: bool) -> dict[str, str]:
    return {
        "schema": str(SCHEMA),
        "proposal_id": f"p{i}",
        "symbol": SYM,
        "action": "PARTIAL_50" if i % 4 else "PARTIAL_25",
        "kill_score": "0.71",
        "k_regime_flip": "0.2",
        "k_sigma_spike": "0.1",
        "k_ts_drop": "0.05",
        "k_age_penalty": "0.01",
        "new_sl": "99.5" if sl and i % 2 else "",
        "r_net": "1.25",
        "position_epoch": "1",
        "tranche": str(i),
        "ts_epoch": f"{now:.6f}",
        "source": "exit-brain",
    }


def permits(plan: Plan, signed: bool) -> tuple[str, str]:
    now = time.time()
    g = GovernorPermit(
        plan_id=plan.plan_id,
        symbol=plan.symbol,
        decision="GRANT",
        granted=True,
        reason="testnet_auto_approve",
        mode="testnet",
        created_at=now,
        computed_qty=Decimal("0.01"),
        computed_notional=Decimal("1.07"),
        expires_at=now + 60,
    )
    p = P33Allow(
        plan_id=plan.plan_id,
        symbol=plan.symbol,
        created_at=now,
        expires_at=now + 60,
        safe_close_qty=Decimal("0.01"),
        side="LONG",
        exchange_position_amt=Decimal("1000"),
        ledger_position_amt=Decimal("1000"),
        snapshot_age_sec=Decimal("0.5"),
    )
    if signed:
        g = g.model_copy(update={"sig": sign(g.body(), GOV_KEY)})
        p = p.model_copy(update={"sig": sign(p.body(), P33_KEY)})
    return g.to_json(), p.to_json()


async def write_permits(r: Any, keys: Keys, ex: Executor, entries: Any, signed: bool) -> None:
    """Both permits of each plan, written as the gatekeepers do, and their events seen."""
    pipe = r.pipeline(transaction=False)
    for _eid, fields in entries:
        plan = Plan.from_fields(fields)
        gj, pj = permits(plan, signed)
        pipe.set(keys.permit_governor(plan.plan_id), gj, ex=60)
        pipe.set(keys.permit_p33(plan.plan_id), pj, ex=60)
    await pipe.execute()
    for _eid, fields in entries:
        ex.permit_seen(fields["plan_id"], "governor")
        ex.permit_seen(fields["plan_id"], "position-brain")


def show(p: cProfile.Profile | None) -> None:
    if p is None:
        return
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(p, stream=out).sort_stats(order).print_stats(50)
        print(out.getvalue())


async def rep(url: str, n: int, signed: bool, profile: str, sl: bool) -> tuple[float, float]:
    prefix = f"cpu{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    kw: dict[str, Any] = (
        {"permit_key_governor": GOV_KEY, "permit_key_p33": P33_KEY} if signed else {}
    )
    settings = Settings(redis_url=url, key_prefix=prefix, **kw)
    r = async_client(url, max_connections=64)
    try:
        clock = SystemClock()
        sim = SimExchange(r, keys, settings.exec_record_ttl_s)
        await sim.set_position(SYM, Decimal("1000"), Decimal(100))
        await sim.set_price(SYM, Decimal(107))
        planner = Planner(r, keys, settings, clock)
        ex = Executor(r, keys, settings, clock, sim)
        stop = asyncio.Event()
        reader = asyncio.create_task(ex.permit_events(stop))
        await ex.events_ready.wait()
        now = time.time()
        props = [proposal(i, now, sl) for i in range(n)]
        # -- planner
        pr = cProfile.Profile() if profile == "planner" else None
        t0 = time.process_time()
        if pr:
            pr.enable()
        for i, f in enumerate(props):
            await planner.handle(f"{i + 1}-0", f)
        if pr:
            pr.disable()
        planner_us = (time.process_time() - t0) / n * 1e6
        # the plans as published, read back (what the executor consumes)
        entries = await r.xrange(keys.plan_stream)
        assert len(entries) == n, len(entries)
        await write_permits(r, keys, ex, entries, signed)  # not timed
        # -- executor
        pr2 = cProfile.Profile() if profile == "executor" else None
        t0 = time.process_time()
        if pr2:
            pr2.enable()
        for eid, fields in entries:
            await ex.handle(eid, fields)
        if pr2:
            pr2.disable()
        executor_us = (time.process_time() - t0) / n * 1e6
        results = await r.xrange(keys.result_stream)
        assert len(results) == n, len(results)
        assert all(f["status"] == "filled" for _i, f in results), results[0]
        stop.set()
        reader.cancel()
        show(pr)
        show(pr2)
        # clean up this rep's keys
        async for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            await r.delete(k)
        return planner_us, executor_us
    finally:
        await r.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="redis://127.0.0.1:7412/0")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--unsigned", action="store_true")
    ap.add_argument("--profile", default="")
    ap.add_argument("--sl", action="store_true")
    a = ap.parse_args()
    # INFO logging as the service runs it, to a sink (the lines are formatted, not shown)
    h = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s apply-layer %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [h]
    logging.getLogger().setLevel("INFO")
    pl, ex = [], []
    for i in range(a.reps):
        p, e = uvloop.run(rep(a.url, a.n, not a.unsigned, a.profile if i == 0 else "", a.sl))
        pl.append(p)
        ex.append(e)
        print(f"rep {i}: planner {p:7.1f} us/plan  executor {e:7.1f} us/plan", flush=True)
    print(
        f"median: planner {statistics.median(pl):.1f} us/plan (min {min(pl):.1f})  "
        f"executor {statistics.median(ex):.1f} us/plan (min {min(ex):.1f})"
    )


if __name__ == "__main__":
    main()
