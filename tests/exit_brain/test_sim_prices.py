"""The sim price driver (pure path + steps on a real server) and sim stop triggering."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal
from itertools import islice
from typing import Any

import pytest

from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_prices import (
    PriceWalk,
    VolRegime,
    drive_prices,
    price_path,
    step_prices,
)
from permitchain.exchange.sim_stops import stop_outcome, trigger_stop
from permitchain.security.acl import setuser_args, username
from permitchain.store import async_client

SYM = "BTCUSDT"
D = Decimal


def test_path_is_seeded_positive_and_on_the_tick() -> None:
    a = [s.price for s in islice(price_path(D(100), seed=5), 500)]
    b = [s.price for s in islice(price_path(D(100), seed=5), 500)]
    c = [s.price for s in islice(price_path(D(100), seed=6), 500)]
    assert a == b and a != c
    assert all(p > 0 and p % D("0.1") == 0 for p in a)
    tiny = [
        s.price
        for s in islice(
            price_path(D("0.2"), seed=1, tick=D("0.1"), regimes=[VolRegime("v", -0.5, 0.1)]), 20
        )
    ]
    assert min(tiny) == D("0.1")  # never rounds to zero


def test_regimes_switch_and_shape_the_path() -> None:
    steps = list(islice(price_path(D(100), seed=11, switch_prob=0.05), 3000))
    assert {s.regime for s in steps} == {"calm", "trend_up", "trend_down", "volatile"}
    up = [
        s.price
        for s in islice(
            price_path(D(100), seed=1, switch_prob=0, regimes=[VolRegime("up", 0.001, 0.0002)]), 100
        )
    ]
    assert up[-1] > D(108)


def test_walk_keeps_small_steps_below_the_tick() -> None:
    walk = PriceWalk(D(100), seed=1, tick=D(1), regimes=[VolRegime("up", 0.001, 0.0)])
    prices = [walk.step().price for _ in range(30)]
    assert prices[0] == D(100) and prices[-1] == D(103)  # 1.001^30 ≈ 1.0304


@pytest.mark.parametrize(
    ("side", "stop", "amt", "mark", "expect"),
    [
        ("SELL", "100.2", "0.062", "100.3", None),  # long, above the stop: nothing
        ("SELL", "100.2", "0.062", "100.2", ("FILLED", "0.016", "0.046")),  # touched: fills
        ("SELL", "100.2", "0.010", "99", ("FILLED", "0.010", "0")),  # never more than held
        ("SELL", "100.2", "0", "99", ("EXPIRED", "0", "0")),  # flat: nothing to reduce
        ("SELL", "100.2", "-0.05", "99", ("EXPIRED", "0", "-0.05")),  # would open: expires
        ("BUY", "99.8", "-0.062", "99.7", None),
        ("BUY", "99.8", "-0.062", "99.9", ("FILLED", "0.016", "-0.046")),
    ],
)
def test_stop_outcome(
    side: str, stop: str, amt: str, mark: str, expect: tuple[str, str, str] | None
) -> None:
    out = stop_outcome(side, D(stop), D("0.016"), D(amt), D(mark), D("0.001"))
    if expect is None:
        assert out is None
    else:
        assert out is not None
        assert (out.status, out.qty, out.new_amt) == (expect[0], D(expect[1]), D(expect[2]))


def test_stop_triggers_once_on_the_sim(arun: Callable[..., Any], keys: Keys) -> None:
    async def body(r: Any) -> Any:
        sim = SimExchange(r, keys)
        await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", tick_size="0.1")
        await sim.set_position(SYM, D("0.062"), D(100))
        await sim.set_price(SYM, D(107))
        assert await trigger_stop(sim, SYM) is None  # no stop yet
        await sim.place_stop_market(SYM, "SELL", D("100.2"), D("0.016"), "pc-test-sl")
        await sim.set_price(SYM, D("100.3"))
        assert await trigger_stop(sim, SYM) is None
        await sim.set_price(SYM, D("100.1"))
        order = await trigger_stop(sim, SYM)
        again = await trigger_stop(sim, SYM)
        pos = (await sim.fetch_positions([SYM]))[SYM]
        return (
            order,
            again,
            pos,
            await sim.fetch_order(SYM, "pc-test-sl"),
            await r.xrange(keys.sim_fills),
        )

    order, again, pos, stored, fills = arun(body)
    assert order is not None and order.status.value == "FILLED" and order.reduce_only
    assert order.filled_qty == D("0.016") and order.avg_price == D("100.1")
    assert again is None  # a filled stop never fills twice
    assert pos.amt == D("0.046")
    assert stored is not None and stored.status.value == "FILLED"
    assert [(f["client_order_id"], f["qty"], f["position_after"]) for _i, f in fills] == [
        ("pc-test-sl-fill", "0.016", "0.046")
    ]


def test_step_prices_starts_from_the_sim_and_adopts_outside_marks(
    arun: Callable[..., Any], keys: Keys
) -> None:
    async def body(r: Any) -> Any:
        sim = SimExchange(r, keys)
        await sim.set_position(SYM, D("0.062"), D(100))  # entry, no mark yet
        await sim.list_symbol("ETHUSDT")  # listed, no price at all: left alone
        walks: dict[str, PriceWalk] = {}
        syms = [SYM, "ETHUSDT"]
        first = await step_prices(sim, syms, 7, walks)
        await sim.set_price(SYM, D(250))  # someone sets a price by hand
        second = await step_prices(sim, syms, 7, walks)
        marks = await sim.mark_prices(syms)
        return first, second, marks

    first, second, marks = arun(body)
    assert set(first) == {SYM} and abs(first[SYM] - 100) < 5
    assert abs(second[SYM] - 250) < 10  # the walk continued from the hand-set price
    assert marks[SYM] == second[SYM]
    assert "ETHUSDT" not in marks  # never given a price by the driver


def test_drive_prices_steps_until_stopped(arun: Callable[..., Any], keys: Keys) -> None:
    class CountingSim(SimExchange):
        """Stops the driver after three price writes, so the test never sleeps to sync."""

        def __init__(self, r: Any, keys: Keys) -> None:
            super().__init__(r, keys)
            self.stop = asyncio.Event()
            self.writes: list[Decimal] = []

        async def set_price(self, symbol: str, price: Decimal) -> None:
            await super().set_price(symbol, price)
            self.writes.append(price)
            if len(self.writes) == 3:
                self.stop.set()

    async def body(r: Any) -> list[Decimal]:
        sim = CountingSim(r, keys)
        await sim.set_position(SYM, D("0.062"), D(100))
        await drive_prices(sim, [SYM], 3, sim.stop, interval_s=0.001)
        return sim.writes

    writes = arun(body)
    assert len(writes) == 3


def test_racing_triggers_fill_once_and_a_half_done_trigger_completes(
    arun: Callable[..., Any], keys: Keys
) -> None:
    async def body(r: Any) -> Any:
        sim = SimExchange(r, keys)
        await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001")
        await sim.set_position(SYM, D("0.062"), D(100))
        await sim.set_price(SYM, D(101))
        await sim.place_stop_market(SYM, "SELL", D("100.2"), D("0.016"), "pc-race-sl")
        await sim.set_price(SYM, D(100))
        raced = await asyncio.gather(*(trigger_stop(sim, SYM) for _ in range(5)))
        # a trigger that died after the fill, before marking the stop: the next one completes
        await sim.place_stop_market(SYM, "SELL", D("99.5"), D("0.010"), "pc-half-sl")
        await sim.set_price(SYM, D(99))
        await sim.fill_inside(SYM, "SELL", D("0.010"), "pc-half-sl-fill")
        resumed = await trigger_stop(sim, SYM)
        pos = (await sim.fetch_positions([SYM]))[SYM].amt
        return raced, resumed, pos, await r.xrange(keys.sim_fills)

    raced, resumed, pos, fills = arun(body)
    done = [o for o in raced if o is not None]
    assert done and all(o.status.value == "FILLED" for o in done)
    assert resumed is not None and resumed.filled_qty == D("0.010")
    assert [f["client_order_id"] for _i, f in fills] == ["pc-race-sl-fill", "pc-half-sl-fill"]
    assert pos == D("0.036")  # 0.062 − 0.016 − 0.010: each stop filled exactly once


def test_driver_and_stops_work_with_the_exit_brains_least_privilege(
    r: Any, keys: Keys, redis_url: str, arun: Callable[..., Any]
) -> None:
    if int(r.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("ACL selectors need a Redis-compatible server >= 7")
    suffix, pw = f"-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    user = username("exit-brain", suffix)
    r.execute_command(*setuser_args("exit-brain", keys, pw, suffix))
    url = redis_url.replace("redis://", f"redis://{user}:{pw}@")

    async def setup(admin: Any) -> None:
        sim = SimExchange(admin, keys)
        await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001")
        await sim.set_position(SYM, D("0.062"), D(100))
        await sim.set_price(SYM, D(200))  # a stop at or above the mark would be refused
        await sim.place_stop_market(SYM, "SELL", D("150"), D("0.016"), "pc-acl-sl")
        await sim.set_price(SYM, D(100))

    async def as_exit_brain() -> Any:
        client = async_client(url)
        try:
            sim = SimExchange(client, keys)
            prices = await step_prices(sim, [SYM], 1, {})  # writes the mark, triggers the stop
            return prices, await sim.fetch_order(SYM, "pc-acl-sl")
        finally:
            await client.aclose()

    try:
        arun(setup)
        prices, order = asyncio.run(as_exit_brain())
    finally:
        r.execute_command("ACL", "DELUSER", user)
    assert SYM in prices
    assert order is not None and order.status.value == "FILLED"  # mark ≈ 100 ≤ stop 150
