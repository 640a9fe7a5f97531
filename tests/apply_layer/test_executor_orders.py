"""Orders: stop steps, one order per symbol at a time, and finishing plans a dead process left."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from permitchain.apply_layer.orders import Submission, client_order_id
from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan
from permitchain.contract.settings import Settings
from permitchain.exchange.base import OrderInfo, Side
from permitchain.exchange.factory import make_exchange
from permitchain.exchange.sim import SimExchange
from tests.apply_layer.bench import SYM, Bench, audit_context, plan_for


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"permit_wait_ms": 300})


def test_update_sl_places_a_reduce_only_stop(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(1, "UPDATE_SL", new_sl="100.2")

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.run(plan, qty="1")  # P3.3: the stop covers the whole position
            return (
                await b.result(plan.plan_id),
                await b.order(plan.plan_id, "-sl"),
                (await b.fills()),
            )

    res, stop, fills = arun(body)
    assert res["status"] == "filled" and res["reason"] == "stop_placed"
    assert res["executed"] == "false" and res["filled_qty"] == "0" and fills == []
    assert stop["type"] == "STOP_MARKET" and stop["reduce_only"] == "true"
    assert stop["stop_price"] == "100.2" and stop["requested_qty"] == "1"
    assert stop["side"] == "SELL" and stop["status"] == "NEW"


def test_partial_close_then_stop_on_the_rest(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(2, "PARTIAL_75", new_sl="100.2")
    older = plan_for(3, "UPDATE_SL", new_sl="99")

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.run(older, qty="1")
            await b.run(plan, qty="0.75")
            return (
                await b.result(plan.plan_id),
                await b.order(plan.plan_id, "-sl"),
                await b.order(older.plan_id, "-sl"),
                await b.fills(),
            )

    res, stop, old_stop, fills = arun(body)
    assert res["status"] == "filled" and res["filled_qty"] == "0.75"
    assert [f["qty"] for f in fills] == ["0.75"]
    assert stop["requested_qty"] == "0.25" and stop["stop_price"] == "100.2"
    assert old_stop["status"] == "CANCELED"  # the new stop replaced the old one


class RecordingSim(SimExchange):
    """The sim exchange, recording when each order call starts and ends."""

    calls: list[tuple[float, float]]

    async def place_reduce_only_market(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        t0 = time.monotonic()
        try:
            return await super().place_reduce_only_market(symbol, side, qty, client_order_id)
        finally:
            self.calls.append((t0, time.monotonic()))


def test_two_plans_for_one_symbol_are_serialised(arun: Any, keys: Keys, fast: Settings) -> None:
    plans = [plan_for(4), plan_for(5)]

    async def body(r: Redis) -> Any:
        sim = RecordingSim(r, keys)
        sim.calls = []
        async with Bench(r, keys, fast, sim=sim) as b:
            await b.sim.set_fault(latency_ms="80")
            for p in plans:
                await b.gov(p)
                await b.p33(p)
            await asyncio.gather(*(b.handle(p) for p in plans))
            return sim.calls, [await b.result(p.plan_id) for p in plans], await b.fills()

    calls, results, fills = arun(body)
    assert [r["status"] for r in results] == ["filled", "filled"] and len(fills) == 2
    (_a0, a1), (b0, _b1) = sorted(calls)
    assert a1 <= b0  # the second order started only after the first one ended


class GatedSim(SimExchange):
    """The sim exchange; an order call waits at the gate until the test opens it."""

    def __init__(self, r: Redis, keys: Keys) -> None:
        super().__init__(r, keys)
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def place_reduce_only_market(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        self.entered.set()
        await self.gate.wait()
        return await super().place_reduce_only_market(symbol, side, qty, client_order_id)


def test_resolver_racing_a_slow_order_writes_no_second_final(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    """The resolver looks while the order call is still out: nothing on the exchange yet, so
    the plan goes unknown (no result); the live call then fills and writes the one result."""
    plan = plan_for(10)

    async def body(r: Redis) -> Any:
        sim = GatedSim(r, keys)
        async with Bench(r, keys, fast, sim=sim) as b:
            run = asyncio.create_task(b.run(plan))
            await sim.entered.wait()
            await b.ex.resolver.resolve_due(float("inf"))
            sim.gate.set()
            await run
            await b.ex.resolver.resolve_due(float("inf"))
            return await b.results(plan.plan_id), await b.fills(), await b.exec_record(plan.plan_id)

    results, fills, rec = arun(body)
    assert [(r["status"], r["executed"]) for r in results] == [("filled", "true")]
    assert len(fills) == 1 and rec["state"] == "filled"


async def crash_after_send(b: Bench, plan: Plan) -> None:
    """Run the plan; the process "dies" right after the order call returns."""

    async def die(*_a: Any, **_k: Any) -> bool:
        raise SystemExit("killed")

    b.ex.desk.conclude = die  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        await b.run(plan)


def test_a_crash_after_the_order_is_resolved_by_lookup(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    """The process dies after sending (the exec record says submitted): a new executor finds
    the order by client order id, writes one result, and never sends again."""
    plan = plan_for(6)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await crash_after_send(b, plan)
            rec = await b.exec_record(plan.plan_id)
        async with Bench(r, keys, fast) as again:
            await again.handle(plan)  # the plan entry redelivered
            n = await again.ex.recover_all()  # and the start-up pass: nothing left
            return rec, n, await again.results(plan.plan_id), await again.fills()

    rec, n, results, fills = arun(body)
    assert rec["state"] == "submitted" and "result_id" not in rec
    sub = Submission.from_fields(rec, plan_id=plan.plan_id)
    assert (sub.symbol, sub.side, sub.qty, sub.close) == (SYM, "SELL", Decimal("0.01"), True)
    assert n == 0
    assert [(r["status"], r["filled_qty"]) for r in results] == [("filled", "0.01")]
    assert len(fills) == 1


def test_recover_all_on_start(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(7)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await crash_after_send(b, plan)
        async with Bench(r, keys, fast) as again:
            n = await again.ex.recover_all()
            return n, await again.results(plan.plan_id), await again.fills()

    n, results, fills = arun(body)
    assert n == 1 and [r["status"] for r in results] == ["filled"] and len(fills) == 1


def test_consumed_but_never_sent_is_blocked_once(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(8)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.gov(plan)
            await b.p33(plan)
            assert (await b.ex.store.consume(plan.plan_id, SYM, "try"))["verdict"] == "ok"
            # the process died here; its plan entry comes back
            await b.handle(plan)
            await b.handle(plan)
            return await b.results(plan.plan_id), await b.fills()

    results, fills = arun(body)
    assert [(r["status"], r["reason"]) for r in results] == [("blocked", "recovered_unsent")]
    assert fills == []


def test_blocked_without_result_gets_its_result_once(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(9)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.p33(plan, allow=False)
            v = await b.ex.store.consume(plan.plan_id, SYM, "try")
            # died before publishing the blocked result; redelivered twice
            await b.handle(plan)
            await b.handle(plan)
            return v["verdict"], await b.results(plan.plan_id)

    verdict, results = arun(body)
    assert verdict == "p33_denied"
    assert [(r["status"], r["reason"]) for r in results] == [("blocked", "p33_denied")]


def test_periodic_resolver_finishes_an_order_filled_later(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    plan = plan_for(11)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.sim.set_fault(order_mode="new")
            await b.run(plan)
            before = await b.results(plan.plan_id)
            await r.hset(
                keys.sim_order(SYM, f"pc-{plan.plan_id}"),  # type: ignore[misc]
                mapping={"status": "FILLED", "filled_qty": "0.01"},
            )
            b.ex.resolver.grace_s, b.ex.resolver.every_s = 0.0, 0.02
            stop = asyncio.Event()
            task = asyncio.create_task(b.ex.resolver.run(stop))
            got = await r.xread({keys.result_stream: "0-0"}, block=5000)  # the resolver's result
            stop.set()
            await task
            return before, [f for _s, entries in got for _i, f in entries]

    before, later = arun(body)
    assert before == []  # NEW: no result yet
    assert [(f["status"], f["filled_qty"], f["executed"]) for f in later] == [
        ("filled", "0.01", "true")
    ]


def test_exec_records_live_exec_record_ttl_s(arun: Any, keys: Keys, fast: Settings) -> None:
    """EXEC_RECORD_TTL_S sets how long an exec record (the plan's proof) is kept."""
    plan = plan_for(41)
    short = fast.model_copy(update={"exec_record_ttl_s": 3600})

    async def body(r: Redis) -> int:
        async with Bench(r, keys, short) as b:
            await b.run(plan)
            assert (await b.result(plan.plan_id))["status"] == "filled"
            return int(await r.ttl(keys.exec_record(plan.plan_id)))

    assert 3500 < arun(body) <= 3600


def test_sim_orders_are_kept_as_long_as_exec_records(arun: Any, keys: Keys, fast: Settings) -> None:
    """The services' simulated exchange keeps its orders EXEC_RECORD_TTL_S (make_exchange)."""
    plan = plan_for(42)
    short = fast.model_copy(update={"exec_record_ttl_s": 600})

    async def body(r: Redis) -> int:
        sim = make_exchange(short, r, keys)
        assert isinstance(sim, SimExchange)
        async with Bench(r, keys, short, sim=sim) as b:
            await b.run(plan)
            assert (await b.result(plan.plan_id))["status"] == "filled"
            return int(await r.ttl(keys.sim_order(SYM, client_order_id(plan.plan_id))))

    assert 500 < arun(body) <= 600


def test_a_plan_older_than_the_retention_is_left_alone(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    """A plan entry read after its exec record would have expired (its result may be long
    out, the record gone): no exec record, no result, no order; one audit entry says why."""
    short = fast.model_copy(update={"exec_record_ttl_s": 600})
    plan = plan_for(43, now=time.time() - 600)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, short) as b:
            await b.run(plan)
            audit = [
                f
                for _i, f in await r.xrange(keys.decisions)
                if f["plan_id"] == plan.plan_id and f["layer"] == "executor"
            ]
            return (
                await b.results(plan.plan_id),
                await b.exec_record(plan.plan_id),
                await b.fills(plan.plan_id),
                audit,
            )

    results, record, fills, audit = arun(body)
    assert results == [] and record == {} and fills == []
    assert [(a["decision"], a["reason"]) for a in audit] == [("SKIPPED", "beyond_retention")]
    assert audit_context(audit[0])["exec_record_ttl_s"] == 600
