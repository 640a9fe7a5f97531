"""The resolver finishes a plan as soon as the exchange pushes its order's final state (the
periodic pass, every 2 s after a 5 s grace, stays the fallback: here it never runs)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from permitchain.apply_layer.resolver import plan_of
from permitchain.contract.errors import ExchangeUnavailable
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.exchange.stream import SimUserStream
from tests.apply_layer.bench import SYM, Bench, plan_for


def test_plan_of_client_order_ids() -> None:
    assert plan_of("pc-0123456789abcdef") == "0123456789abcdef"
    assert plan_of("pc-0123456789abcdef-sx") == "0123456789abcdef"
    assert plan_of("pc-0123456789abcdef-sl") is None  # a stop is no plan's order outcome
    assert plan_of("manual-1") is None and plan_of("pc-") is None


def test_a_pushed_fill_resolves_the_plan_at_once(arun: Any, keys: Keys, settings: Settings) -> None:
    plan = plan_for(12)
    fast = settings.model_copy(update={"permit_wait_ms": 300})

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.sim.set_fault(order_mode="new")
            await b.run(plan)
            before = (await b.exec_record(plan.plan_id)).get("state")
            stream = SimUserStream(r, keys)
            await stream.orders()  # subscribed from here on
            b.ex.resolver.grace_s = b.ex.resolver.every_s = 3600.0  # no periodic pass
            stop = asyncio.Event()
            task = asyncio.create_task(b.ex.resolver.run_pushed(stop, stream))
            coid = f"pc-{plan.plan_id}"
            await r.hset(
                keys.sim_order(SYM, coid),  # type: ignore[misc]
                mapping={"status": "FILLED", "filled_qty": "0.01", "avg_price": "107"},
            )
            await r.xadd(keys.sim_fills, {"symbol": SYM, "client_order_id": coid, "qty": "0.01"})
            got = await r.xread({keys.result_stream: "0-0"}, block=5000)
            stop.set()
            await task
            return before, [f for _s, entries in got for _i, f in entries]

    before, results = arun(body)
    assert before == "unknown"
    assert [(f["plan_id"], f["status"], f["filled_qty"]) for f in results] == [
        (plan.plan_id, "filled", "0.01")
    ]


class FlakyStream:
    """A user stream that breaks once, then answers (nothing pushed)."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    async def positions(self) -> dict[str, Any]:
        return {}

    async def orders(self) -> list[Any]:
        self.calls += 1
        if self.calls == 1:
            raise ExchangeUnavailable("stream down (test)")
        await asyncio.sleep(0.01)
        return []

    def alive(self) -> bool:
        return self.calls > 1

    async def close(self) -> None:
        return None


def test_a_stream_coming_back_asks_for_a_reconciliation(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    async def body(r: Redis) -> int:
        async with Bench(r, keys, settings) as b:
            stop = asyncio.Event()
            asked = asyncio.Event()
            task = asyncio.create_task(
                b.ex.resolver.run_pushed(stop, FlakyStream(), on_reconnect=asked.set)
            )
            await asyncio.wait_for(asked.wait(), 10)
            stop.set()
            await task
            return 1

    assert arun(body) == 1
