"""SIGKILL the apply-layer process between submit and result; the restarted process resolves
the order from the exchange by client order id and never sends it again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from permitchain.chain import Chain
from permitchain.contract.keys import GROUP_EXECUTOR, Keys
from permitchain.contract.models import Plan
from permitchain.exchange.sim import SimExchange
from permitchain.runtime.permits import write_permit
from permitchain.store import async_client
from tests.apply_layer.bench import SYM, gov_json, p33_json, plan_for

pytestmark = pytest.mark.slow
SERVICE = "apply-layer"


async def until(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Poll a condition on the server (another process changes it); fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.01)
    raise TimeoutError(what)


async def send_plan(r: Redis, keys: Keys, plan: Plan) -> None:
    """The plan on the plan stream and both permits, as the planner and gatekeepers write them."""
    await r.xadd(keys.plan_stream, plan.to_fields())  # type: ignore[arg-type]
    for layer, key, raw in (
        ("governor", keys.permit_governor(plan.plan_id), gov_json(plan)),
        ("position-brain", keys.permit_p33(plan.plan_id), p33_json(plan, qty="0.01")),
    ):
        await write_permit(
            r,
            keys,
            key=key,
            permit_json=raw,
            ttl_s=60,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            layer=layer,
            decision="TEST",
            reason="test",
            context={},
            ts=time.time(),
        )


@pytest.mark.parametrize("kill_at", ["after_fill", "before_order"])
def test_sigkill_between_submit_and_result(
    chain_factory: Callable[..., Chain], redis_url: str, kill_at: str
) -> None:
    chain = chain_factory()
    keys = chain.keys
    plan = plan_for(1)
    coid = f"pc-{plan.plan_id}"

    async def body() -> Any:
        r = async_client(redis_url)
        sim = SimExchange(r, keys)
        try:
            await sim.set_position(SYM, Decimal(1), Decimal(100))
            # the order call is slow (1.5 s before the order, 1.5 s per lookup), and its
            # response is lost: the executor has to look the order up, and dies meanwhile
            await sim.set_fault(order_mode="lose_response", latency_ms="1500")
            await asyncio.to_thread(chain.start, [SERVICE])
            await asyncio.to_thread(chain.wait_ready, [SERVICE])
            await send_plan(r, keys, plan)

            async def submitted() -> bool:
                state = await r.hget(keys.exec_record(plan.plan_id), "state")  # type: ignore[misc]
                filled = bool(await r.xlen(keys.sim_fills))
                return state == "submitted" and (filled or kill_at == "before_order")

            await until(submitted, "exec record submitted")
            await asyncio.to_thread(chain.kill_service, SERVICE)
            at_kill = await r.hgetall(keys.exec_record(plan.plan_id))  # type: ignore[misc]
            fills_at_kill = await r.xlen(keys.sim_fills)
            await sim.clear_faults()
            chain._logs.pop(SERVICE).close()  # start_service opens the log file again
            await asyncio.to_thread(chain.start_service, SERVICE)
            await asyncio.to_thread(chain.wait_ready, [SERVICE])

            async def results() -> list[dict[str, str]]:
                entries = await r.xrange(keys.result_stream)
                return [
                    cast("dict[str, str]", f) for _i, f in entries if f["plan_id"] == plan.plan_id
                ]

            async def settled() -> bool:  # a result, and the redelivered plan entry acked
                pending = await r.xpending(keys.plan_stream, GROUP_EXECUTOR)
                return bool(await results()) and pending["pending"] == 0

            await until(settled, "a result after the restart")
            fills = [f for _i, f in await r.xrange(keys.sim_fills) if f["client_order_id"] == coid]
            rec = await r.hgetall(keys.exec_record(plan.plan_id))  # type: ignore[misc]
            return at_kill, fills_at_kill, await results(), fills, rec
        finally:
            await r.aclose()

    at_kill, fills_at_kill, results, fills, rec = asyncio.run(body())
    log = (chain.log_dir / f"{SERVICE}.log").read_text() if chain.log_dir else ""
    assert at_kill["state"] == "submitted" and at_kill["client_order_id"] == coid
    assert "result_id" not in at_kill and "unknown_result_id" not in at_kill
    assert f"[RECOVER] plan={plan.plan_id}" in log
    if kill_at == "after_fill":
        assert fills_at_kill == 1
        assert [(f["qty"], f["side"]) for f in fills] == [("0.01", "SELL")]  # exactly one fill
        assert [(r["status"], r["filled_qty"]) for r in results] == [("filled", "0.01")]
        assert rec["state"] == "filled"
    else:  # killed before the order reached the exchange: nobody ever sends it; its sender
        # is gone, so the plan's one result is a final unknown, never filled
        assert fills_at_kill == 0 and fills == []
        assert [(r["status"], r["reason"], r["executed"]) for r in results] == [
            ("unknown", "exchange_unknown", "false")
        ]
        assert rec["state"] == "unknown" and rec["result_id"]
