"""``sim_order.lua`` decides from the server's state: its decimal arithmetic is exact (no
float rounding of quantities, positions at the bench's 10^12 scale), data it cannot read
is an error with nothing written, and its stop trigger gives :func:`stop_outcome`'s
answers. On a single server it reads the fault config and adds the fill record itself, in
the same step (an injected latency is slept between two runs). Real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal as D
from typing import Any

import pytest
import redis

from permitchain.contract.errors import OrderOutcomeUnknown, OrderRejected, StoreError
from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_stops import stop_outcome, trigger_stop
from permitchain.store.scripts import Scripts
from permitchain.store.sim_order import FILLS_MAXLEN

SYM = "ETHUSDT"
Run = Callable[..., Any]


async def listed(r: Any, keys: Keys, amt: str, step: str = "0.001") -> SimExchange:
    sim = SimExchange(r, keys)
    await sim.list_symbol(SYM, step_size=step, min_qty=step, max_qty="1000000000000")
    await sim.set_position(SYM, D(amt), D(100))
    return sim


@pytest.mark.parametrize(
    ("amt", "qty", "after"),
    [
        ("0.3", "0.1", "0.2"),  # 0.3 - 0.1 is 0.19999999999999998 in floats
        ("1000000000000", "140625000000.001", "859374999999.999"),
        ("-0.07", "0.07", "0"),
        ("12.5", "12.499", "0.001"),
    ],
)
def test_amounts_are_exact_decimals(
    arun: Run, r: redis.Redis, keys: Keys, amt: str, qty: str, after: str
) -> None:
    async def body(ar: Any) -> Any:
        sim = await listed(ar, keys, amt)
        side = "SELL" if D(amt) > 0 else "BUY"
        return await sim.place_reduce_only_market(SYM, side, D(qty), "pc-1")

    order = arun(body)
    assert order.filled_qty == D(qty) and order.status.value == "FILLED"
    assert r.hget(keys.sim_position(SYM), "amt") == after
    (fill,) = [f for _i, f in r.xrange(keys.sim_fills)]
    assert (fill["qty"], fill["position_before"], fill["position_after"]) == (qty, amt, after)


@pytest.mark.parametrize(
    ("step", "qty", "code"),
    [
        ("0.001", "0.0005", -1111),  # below the step
        ("0.001", "0.1234", -1111),  # off the step
        ("0.005", "0.012", -1111),  # a step not a power of ten
        ("0.005", "0.015", None),
        ("0.001", "0", -1111),
        ("0.001", "-0.1", -1111),
        ("0.001", "2", -2022),  # more than the position
    ],
)
def test_the_step_and_reduce_only_checks(
    arun: Run, r: redis.Redis, keys: Keys, step: str, qty: str, code: int | None
) -> None:
    async def body(ar: Any) -> int | None:
        sim = await listed(ar, keys, "1", step=step)
        try:
            await sim.place_reduce_only_market(SYM, "SELL", D(qty), "pc-1")
        except OrderRejected as e:
            return e.code
        return None

    assert arun(body) == code
    assert r.exists(keys.sim_order(SYM, "pc-1")) == (code is None)
    assert r.hget(keys.sim_position(SYM), "amt") == ("1" if code else str(1 - D(qty)))


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [("position", "amt", "1e3"), ("filters", "step_size", "x"), ("position", "amt", "1" * 17)],
)
def test_data_the_script_cannot_read_writes_nothing(
    arun: Run, r: redis.Redis, keys: Keys, key: str, field: str, value: str
) -> None:
    async def body(ar: Any) -> None:
        await listed(ar, keys, "1")
        hkey = keys.sim_position(SYM) if key == "position" else keys.sim_filters(SYM)
        await ar.hset(hkey, field, value)
        with pytest.raises(StoreError, match="sim_order"):
            await SimExchange(ar, keys).place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")

    arun(body)
    assert not r.exists(keys.sim_order(SYM, "pc-1")) and not r.exists(keys.sim_fills)


def test_a_taken_client_order_id_under_a_reject_fault_is_rejected(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    """The injected faults come first, as on the API: the existing order is not returned."""

    async def body(ar: Any) -> tuple[Any, int]:
        sim = await listed(ar, keys, "1")
        first = await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")
        await sim.set_fault(order_mode="reject")
        with pytest.raises(OrderRejected) as e:
            await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")
        await sim.clear_faults()
        again = await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")
        assert again == first
        return first, e.value.code

    _first, code = arun(body)
    assert code == -2019 and r.hget(keys.sim_position(SYM), "amt") == "0.9"


GRID = [
    (side, stop, amt, mark, requested)
    for side, stop in (("SELL", "99.5"), ("BUY", "100.5"))
    for amt in ("0.062", "-0.062", "0.0105", "0")
    for mark in ("99", "99.5", "100", "100.5", "101")
    for requested in ("0.016", "0.5")
]


@pytest.mark.parametrize(("side", "stop", "amt", "mark", "requested"), GRID)
def test_the_trigger_gives_stop_outcomes_answer(
    arun: Run,
    r: redis.Redis,
    keys: Keys,
    side: str,
    stop: str,
    amt: str,
    mark: str,
    requested: str,
) -> None:
    async def body(ar: Any) -> Any:
        sim = await listed(ar, keys, "0.062" if side == "SELL" else "-0.062")
        await sim.place_stop_market(SYM, side, D(stop), D(requested), "pc-sl")  # type: ignore[arg-type]
        await ar.hset(keys.sim_position(SYM), mapping={"amt": amt, "mark_price": mark})
        return await trigger_stop(sim, SYM)

    got = arun(body)
    want = stop_outcome(side, D(stop), D(requested), D(amt), D(mark), D("0.001"))
    if want is None:
        assert got is None and r.hget(keys.sim_stop(SYM), "status") == "NEW"
        return
    assert got is not None and got.status.value == want.status
    assert got.filled_qty == want.qty
    assert D(r.hget(keys.sim_position(SYM), "amt") or "0") == want.new_amt
    assert r.hget(keys.sim_order(SYM, "pc-sl"), "status") == want.status
    fills = [f for _i, f in r.xrange(keys.sim_fills)]
    assert [D(f["qty"]) for f in fills] == ([want.qty] if want.qty else [])


def test_one_run_records_the_order_with_its_fill_record(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    """The script alone (the caller crashing right after it) leaves the order, the position
    moved and the fill record: nothing is left for the caller to add."""

    async def body(ar: Any) -> Any:
        await listed(ar, keys, "1")
        script_keys = [
            keys.sim_position(SYM),
            keys.sim_order(SYM, "pc-1"),
            keys.sim_order_seq(SYM),
            keys.sim_filters(SYM),
            keys.sim_config,
            keys.sim_fills,
        ]
        args = [60, f"{time.time():.6f}", SYM, "pc-1", "SELL", "0.1", "config", "", FILLS_MAXLEN]
        return await Scripts(ar).sim_order(keys=script_keys, args=args)

    res = arun(body)
    assert res[:2] == ["mode", "fill"] and res[2][0] == "ok"
    assert r.hget(keys.sim_order(SYM, "pc-1"), "status") == "FILLED"
    assert r.hget(keys.sim_position(SYM), "amt") == "0.9"
    (fill,) = [f for _i, f in r.xrange(keys.sim_fills)]
    assert (fill["client_order_id"], fill["qty"], fill["position_after"]) == ("pc-1", "0.1", "0.9")


def test_a_fills_stream_of_another_type_writes_nothing(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    async def body(ar: Any) -> None:
        await listed(ar, keys, "1")
        await ar.set(keys.sim_fills, "not a stream")
        with pytest.raises(StoreError, match="fills stream"):
            await SimExchange(ar, keys).place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")

    arun(body)
    assert not r.exists(keys.sim_order(SYM, "pc-1"))
    assert r.hget(keys.sim_position(SYM), "amt") == "1"


def test_an_unreadable_latency_writes_nothing(arun: Run, r: redis.Redis, keys: Keys) -> None:
    async def body(ar: Any) -> None:
        sim = await listed(ar, keys, "1")
        await sim.set_fault(latency_ms="0.5")
        with pytest.raises(StoreError, match="latency_ms"):
            await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")

    arun(body)
    assert not r.exists(keys.sim_order(SYM, "pc-1")) and not r.exists(keys.sim_fills)


def test_the_latency_is_slept_then_the_config_of_then_decides(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    """A latency answer writes nothing; the second run, after the sleep, reads the config
    again: an order whose config turned to reject meanwhile is rejected."""

    async def body(ar: Any) -> tuple[list[Any], float, int, list[Any]]:
        sim = await listed(ar, keys, "1")
        replies: list[Any] = []
        delayed = asyncio.Event()
        send = ar.execute_command

        async def recorded(*args: Any, **options: Any) -> Any:
            res = await send(*args, **options)
            if args[0] == "EVALSHA":
                replies.append(res)
                if res[0] == "delay":
                    delayed.set()
            return res

        ar.execute_command = recorded
        await sim.set_fault(latency_ms="300")
        t0 = time.monotonic()
        await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")
        slow_s = time.monotonic() - t0
        first = list(replies)
        replies.clear()
        delayed.clear()
        order = asyncio.create_task(sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-2"))
        await delayed.wait()  # the first run answered: sleeping now
        assert not await ar.exists(keys.sim_order(SYM, "pc-2"))
        await sim.set_fault(order_mode="reject", latency_ms="200")
        with pytest.raises(OrderRejected) as rejected:
            await order
        return first, slow_s, rejected.value.code, list(replies)

    first, slow_s, code, second = arun(body)
    assert [x[0] for x in first] == ["delay", "mode"] and first[0][1] == "300"
    assert slow_s >= 0.3  # the order took at least the configured latency
    # the served run decides under the config of then, without a second latency answer
    assert code == -2019 and [x[0] for x in second] == ["delay", "mode"]
    assert second[1][1] == "reject"
    assert not r.exists(keys.sim_order(SYM, "pc-2"))
    assert [f["client_order_id"] for _i, f in r.xrange(keys.sim_fills)] == ["pc-1"]


@pytest.mark.parametrize(
    ("mode", "status", "filled"),
    [("new", "NEW", False), ("lose_response", "FILLED", True), ("timeout", None, False)],
)
def test_the_config_fault_mode_read_by_the_script(
    arun: Run, r: redis.Redis, keys: Keys, mode: str, status: str | None, filled: bool
) -> None:
    async def body(ar: Any) -> Any:
        sim = await listed(ar, keys, "1")
        await sim.set_fault(order_mode=mode)
        try:
            return await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")
        except OrderOutcomeUnknown as e:
            return e

    got = arun(body)
    assert isinstance(got, OrderOutcomeUnknown) == (mode != "new")
    assert r.hget(keys.sim_order(SYM, "pc-1"), "status") == status
    fills = [f["client_order_id"] for _i, f in r.xrange(keys.sim_fills)]
    assert fills == (["pc-1"] if filled else [])
    assert r.hget(keys.sim_position(SYM), "amt") == ("0.9" if filled else "1")
