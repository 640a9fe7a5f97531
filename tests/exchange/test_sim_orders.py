"""The simulated exchange's market order: one ``sim_order.lua`` run decides it from the
server's state (the position, the filters, the order record of the client order id, the
fault-injection config) and adds its fill record. Whatever changed between two orders (the
position, the filters, the config), the next order is decided on it. Real Redis; commands
counted with ``INFO commandstats`` (the server's, a script's own calls included) and by the
client's ``execute_command`` (the round trips)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal as D
from typing import Any

import pytest
import redis

from permitchain.contract.errors import OrderOutcomeUnknown, OrderRejected, StopWouldTrigger
from permitchain.contract.keys import Keys
from permitchain.exchange.base import OrderInfo
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_stops import trigger_stop

SYM = "BTCUSDT"
Run = Callable[..., Any]


def calls(r: redis.Redis, *commands: str) -> dict[str, int]:
    """Calls so far of each command, server-wide (a script's own calls included)."""
    stats = r.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {c: after[c] - before[c] for c in before}


def sent(ar: Any) -> list[str]:
    """The commands the client ``ar`` sends from now on (its ``execute_command`` wrapped)."""
    names: list[str] = []
    send = ar.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        names.append(str(args[0]).upper())
        return await send(*args, **options)

    ar.execute_command = counted
    return names


async def listed(r: Any, keys: Keys, amt: str = "1", price: str = "100") -> SimExchange:
    sim = SimExchange(r, keys)
    await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", min_notional="0")
    await sim.set_position(SYM, D(amt), D(price))
    return sim


async def sell(sim: SimExchange, qty: str, coid: str) -> OrderInfo:
    return await sim.place_reduce_only_market(SYM, "SELL", D(qty), coid)


def test_an_order_fills_against_a_position_changed_outside(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    pos = keys.sim_position(SYM)

    async def body(ar: Any) -> list[Any]:
        sim = await listed(ar, keys)
        out: list[Any] = [await sell(sim, "0.1", "pc-1")]
        await ar.hset(pos, mapping={"amt": "0.5", "mark_price": "120"})  # seeding, a CLI
        out.append(await sell(sim, "0.1", "pc-2"))
        await ar.hdel(pos, "mark_price")
        await ar.hset(pos, "entry_price", "110")  # no mark: the entry price
        out.append(await sell(sim, "0.1", "pc-3"))
        other = SimExchange(ar, keys)  # another process: the position moves between orders
        await other.place_reduce_only_market(SYM, "SELL", D("0.2"), "pc-other")
        with pytest.raises(OrderRejected) as no_longer:  # 0.1 left: 0.2 no longer reduces
            await sell(sim, "0.2", "pc-4")
        out.append(no_longer.value.code)
        await ar.hset(pos, "amt", "-0.3")  # flipped outside: a SELL would open
        with pytest.raises(OrderRejected) as flipped:
            await sell(sim, "0.1", "pc-5")
        out.append(flipped.value.code)
        out.append(await sim.place_reduce_only_market(SYM, "BUY", D("0.1"), "pc-6"))
        return out

    o1, o2, o3, code4, code5, o6 = arun(body)
    assert (o1.avg_price, o2.avg_price, o3.avg_price, o6.avg_price) == (
        D(100),
        D(120),
        D(110),
        D(110),
    )
    assert code4 == code5 == -2022
    assert not r.exists(keys.sim_order(SYM, "pc-4")) and not r.exists(keys.sim_order(SYM, "pc-5"))
    fills = [
        (f["client_order_id"], f["position_before"], f["position_after"], f["price"])
        for _i, f in r.xrange(keys.sim_fills)
    ]
    assert fills == [
        ("pc-1", "1", "0.9", "100"),
        ("pc-2", "0.5", "0.4", "120"),
        ("pc-3", "0.4", "0.3", "110"),
        ("pc-other", "0.3", "0.1", "110"),
        ("pc-6", "-0.3", "-0.2", "110"),
    ]
    assert r.hget(keys.sim_position(SYM), "amt") == "-0.2"


def test_a_triggered_stop_moves_the_position_between_orders(arun: Run, keys: Keys) -> None:
    async def body(ar: Any) -> tuple[Any, ...]:
        sim = await listed(ar, keys, amt="0.062")
        await sell(sim, "0.002", "pc-1")
        await sim.place_stop_market(SYM, "SELL", D("99.5"), D("0.05"), "pc-sl")
        await sim.set_price(SYM, D(99))
        stopped = await trigger_stop(SimExchange(ar, keys), SYM)  # the exit brain's sim
        with pytest.raises(OrderRejected):  # 0.01 left: 0.02 would not reduce only
            await sell(sim, "0.02", "pc-2")
        after = await sell(sim, "0.01", "pc-3")
        return stopped, after, (await sim.fetch_positions([SYM]))[SYM].amt

    stopped, after, amt = arun(body)
    assert stopped is not None and stopped.filled_qty == D("0.05")
    assert after.avg_price == D(99) and amt == D(0)


def test_b_config_changed_between_orders_applies_to_the_next_one(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    cfg = keys.sim_config

    async def body(ar: Any) -> dict[str, Any]:
        sim = await listed(ar, keys)
        out: dict[str, Any] = {
            "fill": await sim.place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-1")
        }
        r.hset(cfg, "order_mode", "reject")  # the operator: permitchain sim fault
        with pytest.raises(OrderRejected) as rejected:
            await sell(sim, "0.1", "pc-2")
        out["reject"] = rejected.value.code
        r.hset(cfg, "order_mode", "timeout")
        with pytest.raises(OrderOutcomeUnknown):
            await sell(sim, "0.1", "pc-3")
        r.delete(cfg)
        out["cleared"] = await sell(sim, "0.1", "pc-4")
        r.hset(cfg, "latency_ms", "300")
        t0 = time.monotonic()
        out["slow"] = await sell(sim, "0.1", "pc-5")
        out["slow_s"] = time.monotonic() - t0
        r.hset(cfg, mapping={"latency_ms": "0", "order_mode": "lose_response"})
        t0 = time.monotonic()
        with pytest.raises(OrderOutcomeUnknown):
            await sell(sim, "0.1", "pc-6")
        out["fast_s"] = time.monotonic() - t0
        r.hset(cfg, "order_mode", "new")
        out["new"] = await sell(sim, "0.1", "pc-7")
        r.hset(cfg, "order_mode", "fill")
        out["fill_again"] = await sell(sim, "0.1", "pc-8")
        return out

    out = arun(body)
    assert out["reject"] == -2019
    assert not r.exists(keys.sim_order(SYM, "pc-2")) and not r.exists(keys.sim_order(SYM, "pc-3"))
    assert out["cleared"].status.value == "FILLED"
    assert out["slow"].status.value == "FILLED" and out["slow_s"] >= 0.3
    assert out["fast_s"] < 0.3
    lost = r.hgetall(keys.sim_order(SYM, "pc-6"))
    assert lost["status"] == "FILLED"  # filled, the response lost
    assert out["new"].status.value == "NEW" and out["new"].filled_qty == 0
    assert out["fill_again"].status.value == "FILLED"
    fills = [f["client_order_id"] for _i, f in r.xrange(keys.sim_fills)]
    assert fills == ["pc-1", "pc-4", "pc-5", "pc-6", "pc-8"]
    assert r.hget(keys.sim_position(SYM), "amt") == "0.5"


def test_c_an_order_is_one_script(arun: Run, r: redis.Redis, keys: Keys) -> None:
    """One EVALSHA per order, the config read and the fill record added inside it."""
    pos = keys.sim_position(SYM)
    cmds = ("hgetall", "hmget", "evalsha", "xadd")

    async def body(ar: Any) -> tuple[list[dict[str, int]], list[list[str]]]:
        sim = await listed(ar, keys)
        await sell(sim, "0.1", "pc-0")  # the script loaded (a first EVALSHA may need EVAL)
        seen, round_trips, names = [calls(r, *cmds)], [], sent(ar)

        async def counted(order: Awaitable[Any]) -> None:
            names.clear()
            with contextlib.suppress(OrderRejected):
                await order
            round_trips.append(list(names))
            seen.append(calls(r, *cmds))

        await counted(sell(sim, "0.1", "pc-1"))
        await ar.hset(pos, "amt", "0.4")  # moved outside: the script reads it
        await counted(sell(sim, "0.1", "pc-2"))
        # a fill inside the exchange (a stop): no fault mode
        await counted(sim.fill_inside(SYM, "SELL", D("0.1"), "pc-3"))
        await counted(sell(sim, "0.4", "pc-4"))  # rejected (0.2 left): writes nothing
        return seen, round_trips

    s, round_trips = arun(body)
    assert round_trips == [["EVALSHA"]] * 4
    # inside the script: the config, filters and position read (HMGET), the fill record added
    assert delta(s[0], s[1]) == {"hgetall": 0, "hmget": 3, "evalsha": 1, "xadd": 1}
    assert delta(s[1], s[2]) == {"hgetall": 0, "hmget": 3, "evalsha": 1, "xadd": 1}
    assert delta(s[2], s[3]) == {"hgetall": 0, "hmget": 2, "evalsha": 1, "xadd": 1}
    assert delta(s[3], s[4]) == {"hgetall": 0, "hmget": 3, "evalsha": 1, "xadd": 0}
    assert r.hget(pos, "amt") == "0.2"
    assert not r.exists(keys.sim_order(SYM, "pc-4"))
    fills = [f["client_order_id"] for _i, f in r.xrange(keys.sim_fills)]
    assert fills == ["pc-0", "pc-1", "pc-2", "pc-3"]


def test_d_a_taken_client_order_id_returns_the_existing_order(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    async def body(ar: Any) -> tuple[Any, ...]:
        sim = await listed(ar, keys, amt="0.3")
        first = await sell(sim, "0.1", "pc-1")
        again = await sell(sim, "0.1", "pc-1")
        other = await SimExchange(ar, keys).place_reduce_only_market(SYM, "SELL", D("0.1"), "pc-2")
        before, names = calls(r, "hgetall", "evalsha"), sent(ar)
        seen_other = await sell(sim, "0.1", "pc-2")
        d = delta(before, calls(r, "hgetall", "evalsha"))
        assert names == ["EVALSHA"]
        last = await sell(sim, "0.1", "pc-3")  # to 0
        last_again = await sell(sim, "0.1", "pc-3")
        return first, again, other, seen_other, d, last, last_again

    first, again, other, seen_other, d, last, last_again = arun(body)
    assert again == first and seen_other == other and last_again == last
    # one script, whose reply carries the order (its HGETALL)
    assert d == {"hgetall": 1, "evalsha": 1}
    assert len(r.xrange(keys.sim_fills)) == 3  # each client order id filled once
    assert r.hget(keys.sim_position(SYM), "amt") == "0"


def test_e_filters_changed_outside_apply_to_the_next_order(
    arun: Run, r: redis.Redis, keys: Keys
) -> None:
    async def body(ar: Any) -> list[Any]:
        sim, filters = await listed(ar, keys), keys.sim_filters(SYM)
        out: list[Any] = [await sell(sim, "0.005", "pc-1")]
        r.hset(filters, "step_size", "0.01")
        with pytest.raises(OrderRejected) as step:
            await sell(sim, "0.005", "pc-2")
        out.append(step.value.code)
        r.hset(filters, mapping={"step_size": "0.001", "max_qty": "0.004"})
        with pytest.raises(OrderRejected) as too_big:
            await sell(sim, "0.005", "pc-3")
        out.append(too_big.value.code)
        r.hset(filters, "max_qty", "10")  # remembered as rejecting: a fresh read decides
        out.append(await sell(sim, "0.005", "pc-4"))
        r.delete(filters)  # delisted
        with pytest.raises(OrderRejected) as gone:
            await sell(sim, "0.005", "pc-5")
        out.append(gone.value.code)
        return out

    o1, step, too_big, o4, gone = arun(body)
    assert (step, too_big, gone) == (-1111, -4003, -1121)
    assert o1.status.value == o4.status.value == "FILLED"
    assert r.hget(keys.sim_position(SYM), "amt") == "0.99"


@pytest.mark.parametrize(
    ("amt", "side", "stop"),
    [("1", "SELL", "100"), ("1", "SELL", "100.3"), ("-1", "BUY", "100"), ("-1", "BUY", "99.7")],
)
def test_a_stop_the_mark_has_reached_is_refused_like_binance(
    arun: Run, keys: Keys, amt: str, side: str, stop: str
) -> None:
    """Binance -2021: nothing placed, no stop resting; a stop on the safe side is placed."""

    async def body(r: Any) -> tuple[StopWouldTrigger, list[OrderInfo], OrderInfo]:
        sim = await listed(r, keys, amt=amt)  # mark = entry = 100
        with pytest.raises(StopWouldTrigger) as refused:
            await sim.place_stop_market(SYM, side, D(stop), D("1"), "pc-x-sl")  # type: ignore[arg-type]
        resting = await sim.open_orders(SYM)
        safe = D("99") if side == "SELL" else D("101")
        placed = await sim.place_stop_market(SYM, side, safe, D("1"), "pc-y-sl")  # type: ignore[arg-type]
        return refused.value, resting, placed

    refused, resting, placed = arun(body)
    assert refused.code == -2021 and "immediately trigger" in str(refused)
    assert resting == [] and placed.status.value == "NEW"
