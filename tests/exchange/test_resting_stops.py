"""The chain's own resting stops, on the simulated exchange and on the fake Binance (through
ccxt): a full close leaves no stop of the symbol on the exchange (asked of the exchange
itself), a new stop replaces the old, and a stop the mark has already passed is replaced by a
market close of its quantity."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from permitchain.apply_layer.stops import StopBook
from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan
from permitchain.contract.settings import Settings
from permitchain.exchange.base import Exchange, OrderStatus
from tests.apply_layer.bench import SYM, Bench, plan_for
from tests.exchange.binance_helpers import adapter
from tests.fakebinance import FakeBinance

D = Decimal


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"permit_wait_ms": 300})


class FakeBench(Bench):
    """The bench's executor on the fake Binance through ccxt (position 1 at mark 100)."""

    def __init__(self, r: Redis, keys: Keys, settings: Settings, fake: FakeBinance) -> None:
        super().__init__(r, keys, settings)
        self.fake = fake
        self.binance = adapter(fake)
        self.ex.exchange = self.ex.desk.exchange = self.ex.resolver.exchange = self.binance

    async def __aenter__(self) -> FakeBench:
        self.fake.set_position(SYM, "1", entry_price="100")
        self.fake.set_price(SYM, "100")
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        await self.binance.close()


def on_exchange(b: Bench) -> Exchange:
    return b.binance if isinstance(b, FakeBench) else b.sim


async def open_stops(b: Bench) -> list[str]:
    """Open stops of the symbol, as the exchange itself lists them."""
    return [
        o.client_order_id for o in await on_exchange(b).open_orders(SYM) if o.type == "STOP_MARKET"
    ]


async def full_close_leaves_no_stop(b: Bench) -> dict[str, Any]:
    first, second = plan_for(1, "UPDATE_SL", new_sl="95"), plan_for(2, "UPDATE_SL", new_sl="96")
    close = plan_for(3, "FULL_CLOSE_PROPOSED")
    await b.run(first, qty="1")
    await b.run(second, qty="1")
    after_move = await open_stops(b)
    book_after_move = [s.client_order_id for s in await StopBook(b.r, b.k).stops(SYM)]
    await b.run(close, qty="1")
    return {
        "after_move": after_move,
        "book_after_move": book_after_move,
        "after_close": await open_stops(b),
        "book": await StopBook(b.r, b.k).stops(SYM),
        "result": await b.result(close.plan_id),
        "second": second,
    }


def check_full_close(out: dict[str, Any]) -> None:
    second: Plan = out["second"]
    assert out["after_move"] == [f"pc-{second.plan_id}-sl"]  # the new stop replaced the old
    assert out["book_after_move"] == [f"pc-{second.plan_id}-sl"]
    assert out["result"]["status"] == "filled" and out["result"]["filled_qty"] == "1"
    assert out["after_close"] == [] and out["book"] == []


def test_full_close_cancels_the_stops_on_the_sim(arun: Any, keys: Keys, fast: Settings) -> None:
    async def body(r: Redis) -> dict[str, Any]:
        async with Bench(r, keys, fast) as b:
            return await full_close_leaves_no_stop(b)

    check_full_close(arun(body))


def test_full_close_cancels_the_stops_on_binance(
    arun: Any, keys: Keys, fast: Settings, fake: FakeBinance
) -> None:
    async def body(r: Redis) -> dict[str, Any]:
        async with FakeBench(r, keys, fast, fake) as b:
            return await full_close_leaves_no_stop(b)

    check_full_close(arun(body))
    assert [o["algoStatus"] for o in fake.algo_orders(SYM)] == ["CANCELED", "CANCELED"]
    assert fake.position(SYM) == "0"


def test_partial_close_keeps_the_stop(
    arun: Any, keys: Keys, fast: Settings, fake: FakeBinance
) -> None:
    async def body(r: Redis) -> list[str]:
        async with FakeBench(r, keys, fast, fake) as b:
            await b.run(plan_for(1, "UPDATE_SL", new_sl="95"), qty="1")
            await b.run(plan_for(2, "PARTIAL_50"), qty="0.5")
            return await open_stops(b)

    assert len(arun(body)) == 1
    assert fake.position(SYM) == "0.5"


def test_stop_already_passed_closes_at_market(
    arun: Any, keys: Keys, fast: Settings, fake: FakeBinance
) -> None:
    """Binance refuses the stop (-2021): its condition is met, so its quantity is closed at
    market (reduce-only), the result carries the fill, and the old stop goes with the
    position."""
    old, moved = plan_for(1, "UPDATE_SL", new_sl="95"), plan_for(2, "UPDATE_SL", new_sl="100.5")

    async def body(r: Redis) -> tuple[dict[str, str], list[str]]:
        async with FakeBench(r, keys, fast, fake) as b:
            await b.run(old, qty="1")
            await b.run(moved, qty="1")
            return await b.result(moved.plan_id), await open_stops(b)

    res, stops = arun(body)
    assert (res["status"], res["reason"], res["filled_qty"]) == (
        "filled",
        "stop_crossed_closed",
        "1",
    )
    assert res["executed"] == "true" and res["client_order_id"] == f"pc-{moved.plan_id}-sx"
    assert fake.position(SYM) == "0" and stops == []
    [close] = [o for o in fake.orders(SYM) if o["clientOrderId"].endswith("-sx")]
    assert close["reduceOnly"] is True and close["status"] == "FILLED"


def test_remainder_stop_already_passed_is_closed_too(
    arun: Any, keys: Keys, fast: Settings, fake: FakeBinance
) -> None:
    plan = plan_for(1, "PARTIAL_50", new_sl="100.5")

    async def body(r: Redis) -> dict[str, str]:
        async with FakeBench(r, keys, fast, fake) as b:
            await b.run(plan, qty="0.5")
            return await b.result(plan.plan_id)

    res = arun(body)
    assert (res["status"], res["filled_qty"]) == ("filled", "1")
    assert fake.position(SYM) == "0"


def test_cancel_of_a_stop_no_longer_open_is_not_an_error(fake: FakeBinance) -> None:
    import asyncio

    fake.set_position(SYM, "1")

    async def body() -> Any:
        ex = adapter(fake)
        try:
            await ex.place_stop_market(SYM, "SELL", D("95"), D("1"), "pc-c-sl")
            first = await ex.cancel_order(SYM, "pc-c-sl")
            again = await ex.cancel_order(SYM, "pc-c-sl")
            none = await ex.cancel_order(SYM, "pc-none-sl")
            return first, again, none
        finally:
            await ex.close()

    first, again, none = asyncio.run(body())
    assert first.status is OrderStatus.CANCELED and again.status is OrderStatus.CANCELED
    assert none is None


def test_a_new_stop_that_fails_leaves_the_old_one(
    arun: Any, keys: Keys, fast: Settings, fake: FakeBinance
) -> None:
    """New first, then cancel: when the new stop is refused, the old one still protects."""
    old, moved = plan_for(1, "UPDATE_SL", new_sl="95"), plan_for(2, "UPDATE_SL", new_sl="96")

    async def body(r: Redis) -> tuple[dict[str, str], list[str]]:
        async with FakeBench(r, keys, fast, fake) as b:
            await b.run(old, qty="1")
            fake.fail_next(
                path="/fapi/v1/algoOrder", method="POST", code=-2019, msg="Margin is insufficient."
            )
            await b.run(moved, qty="1")
            return await b.result(moved.plan_id), await open_stops(b)

    res, stops = arun(body)
    assert (res["status"], res["reason"]) == ("rejected", "exchange_rejected")
    assert stops == [f"pc-{old.plan_id}-sl"]


def test_stop_already_passed_closes_at_market_on_the_sim(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    """The sim refuses the passed stop as Binance does (-2021), so the executor takes the same
    close-at-market path: the stop's quantity closed reduce-only, no stop left resting."""
    old, moved = plan_for(1, "UPDATE_SL", new_sl="95"), plan_for(2, "UPDATE_SL", new_sl="108")

    async def body(r: Redis) -> tuple[dict[str, str], list[str], Any, Any]:
        async with Bench(r, keys, fast) as b:  # the mark is 107: a SELL stop at 108 is passed
            await b.run(old, qty="1")
            await b.run(moved, qty="1")
            close = await b.sim.fetch_order(SYM, f"pc-{moved.plan_id}-sx")
            amt = (await b.sim.fetch_positions([SYM]))[SYM].amt
            return await b.result(moved.plan_id), await open_stops(b), close, amt

    res, stops, close, amt = arun(body)
    assert (res["status"], res["reason"], res["filled_qty"]) == (
        "filled",
        "stop_crossed_closed",
        "1",
    )
    assert res["client_order_id"] == f"pc-{moved.plan_id}-sx"
    assert close is not None and close.status is OrderStatus.FILLED and close.reduce_only
    assert amt == 0 and stops == []
