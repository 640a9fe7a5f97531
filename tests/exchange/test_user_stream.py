"""Pushed account updates: the fake Binance's user data stream (a real websocket on
127.0.0.1) read through ccxt.pro, its faults, and the simulated exchange's Redis streams."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from permitchain.contract.errors import ExchangeUnavailable, OrderRejected
from permitchain.contract.keys import Keys
from permitchain.exchange.base import OrderInfo, OrderStatus, PositionInfo
from permitchain.exchange.binance_stream import BinanceUserStream
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.stream import SimUserStream
from tests.exchange.binance_helpers import adapter
from tests.fakebinance import API_KEY, API_SECRET, FakeBinance

D = Decimal
T = TypeVar("T")
SYM = "BTCUSDT"
WAIT_S = 10.0  # a pushed event that does not arrive within this fails the test


def stream(fake: FakeBinance) -> BinanceUserStream:
    return BinanceUserStream(API_KEY, API_SECRET, demo=True, base_url=fake.url)


async def until(get: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Call ``get`` (each call waits for the next push) until ``done`` holds."""

    async def loop() -> T:
        while True:
            got = await get()
            if done(got):
                return got

    return await asyncio.wait_for(loop(), WAIT_S)


async def amount_pushed(us: BinanceUserStream, amt: str) -> dict[str, PositionInfo]:
    got = await until(us.positions, lambda p: SYM in p and p[SYM].amt == D(amt))
    await asyncio.wait_for(us.wait_connected(), WAIT_S)
    return got


async def final_order(us: BinanceUserStream, coid: str) -> OrderInfo:
    found: dict[str, OrderInfo] = {}

    async def get() -> dict[str, OrderInfo]:
        for o in await us.orders():
            found[o.client_order_id] = o
        return found

    got = await until(get, lambda f: coid in f and f[coid].status is OrderStatus.FILLED)
    return got[coid]


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())


def test_listen_key_create_keep_alive_and_expiry(fake: FakeBinance) -> None:
    async def body() -> tuple[str, str, int | None]:
        ex = adapter(fake)
        try:
            key = (await ex._call("read", "fapiPrivatePostListenKey"))["listenKey"]
            again = (await ex._call("read", "fapiPrivatePostListenKey"))["listenKey"]
            assert again == key  # the live key is returned, extended
            await ex._call("read", "fapiPrivatePutListenKey")
            fake.expire_listen_key()
            code = None
            try:
                await ex._call("read", "fapiPrivatePutListenKey")
            except ExchangeUnavailable as e:
                code = e.code
            new = (await ex._call("read", "fapiPrivatePostListenKey"))["listenKey"]
            return key, new, code
        finally:
            await ex.close()

    key, new, code = run(body)
    assert code == -1125 and new != key
    assert fake.state.keep_alives == 1


def test_positions_and_orders_are_pushed_in_binance_order(fake: FakeBinance) -> None:
    fake.set_position(SYM, "0.062")

    async def body() -> OrderInfo:
        us, ex = stream(fake), adapter(fake)
        try:
            await amount_pushed(us, "0.062")  # the snapshot ccxt loads at subscription
            fake.set_position(SYM, "0.05")
            await amount_pushed(us, "0.05")
            await ex.place_reduce_only_market(SYM, "SELL", D("0.01"), "pc-w1")
            await amount_pushed(us, "0.04")
            return await final_order(us, "pc-w1")
        finally:
            await us.close()
            await ex.close()

    order = run(body)
    assert (order.filled_qty, order.avg_price, order.reduce_only) == (D("0.01"), D(100), True)
    kinds = [(e["e"], e.get("o", {}).get("x")) for e in fake.stream_events()][-3:]
    assert kinds == [
        ("ORDER_TRADE_UPDATE", "NEW"),
        ("ACCOUNT_UPDATE", None),
        ("ORDER_TRADE_UPDATE", "TRADE"),
    ]


def test_disconnect_mid_fill_reconnects_and_sees_the_fill(fake: FakeBinance) -> None:
    """The socket closes after the order's NEW: the call raises, the stream is down, and the
    next call reconnects (a fresh snapshot): the fill is not lost."""
    fake.set_position(SYM, "0.062")

    async def body() -> tuple[bool, bool]:
        us, ex = stream(fake), adapter(fake)
        try:
            await amount_pushed(us, "0.062")
            fake.set_stream_fault("drop_mid_fill")
            await ex.place_reduce_only_market(SYM, "SELL", D("0.02"), "pc-w2")
            with pytest.raises(ExchangeUnavailable):
                await until(us.positions, lambda _p: False)
            down = us.alive()
            await amount_pushed(us, "0.042")
            return down, us.alive()
        finally:
            await us.close()
            await ex.close()

    down, up = run(body)
    assert (down, up) == (False, True)


def test_listen_key_expired_makes_a_new_key(fake: FakeBinance) -> None:
    fake.set_position(SYM, "0.062")

    async def body() -> None:
        us = stream(fake)
        try:
            await amount_pushed(us, "0.062")
            first = next(iter(fake.state.listen_keys))
            fake.expire_listen_key()
            with pytest.raises(ExchangeUnavailable):
                await until(us.positions, lambda _p: False)
            fake.set_position(SYM, "0.03")
            await amount_pushed(us, "0.03")
            assert next(iter(fake.state.listen_keys)) != first
        finally:
            await us.close()

    run(body)
    assert fake.stream_connections() == 0


def test_duplicated_events_are_given_once(fake: FakeBinance) -> None:
    fake.set_position(SYM, "0.062")

    async def body() -> list[list[str]]:
        us = stream(fake)
        seen: list[list[str]] = []
        try:
            await amount_pushed(us, "0.062")
            fake.set_stream_fault("duplicate")
            fake.set_position(SYM, "0.05")
            fake.set_position(SYM, "0.04")

            async def get() -> list[list[str]]:
                got = await us.positions()
                if got:
                    seen.append([str(p.amt) for p in got.values()])
                return seen

            await until(get, lambda s: ["0.04"] in s)
            return seen
        finally:
            await us.close()

    assert run(body) == [["0.05"], ["0.04"]]


def test_an_older_position_update_arriving_late_is_ignored(fake: FakeBinance) -> None:
    """Out of order: the update to 0.05 is held back and arrives after the one to 0.04; the
    position stays 0.04."""
    fake.set_position(SYM, "0.062")

    async def body() -> Decimal:
        us = stream(fake)
        try:
            await amount_pushed(us, "0.062")
            fake.set_stream_fault("reorder")
            fake.set_position(SYM, "0.05")  # held back
            fake.set_position(SYM, "0.04")  # sent, then the held one
            await amount_pushed(us, "0.04")
            fake.set_position(SYM, "0.03")  # a later update still applies
            got = await amount_pushed(us, "0.03")
            return got[SYM].amt
        finally:
            await us.close()

    assert run(body) == D("0.03")


def test_refused_stream_is_down(fake: FakeBinance) -> None:
    fake.set_position(SYM, "0.062")
    fake.set_stream_refused(True)

    async def body() -> bool:
        us = stream(fake)
        try:
            with pytest.raises(ExchangeUnavailable):
                await us.positions()
            return us.alive()
        finally:
            await us.close()

    assert run(body) is False


def test_sim_publishes_the_same_updates(arun: Any, keys: Keys) -> None:
    async def body(r: Any) -> tuple[dict[str, PositionInfo], list[OrderInfo], bool]:
        sim = SimExchange(r, keys)
        await sim.set_position(SYM, D("1"), D(100))
        us = SimUserStream(r, keys)
        await us.positions()  # from here on
        await sim.set_position(SYM, D("0.8"))
        moved = await until(us.positions, lambda p: SYM in p)
        await us.orders()
        await sim.place_reduce_only_market(SYM, "SELL", D("0.3"), "pc-s1")
        orders = await until(us.orders, bool)
        return moved, orders, us.alive()

    moved, orders, alive = arun(body)
    assert moved[SYM].amt == D("0.8") and alive
    assert [(o.client_order_id, o.status, o.filled_qty) for o in orders] == [
        ("pc-s1", OrderStatus.FILLED, D("0.3"))
    ]


def test_order_errors_keep_their_meaning(fake: FakeBinance) -> None:
    """The stream does not change what an order's answer means (one refused order)."""
    fake.set_position(SYM, "0")

    async def body() -> None:
        ex = adapter(fake)
        try:
            with pytest.raises(OrderRejected):
                await ex.place_reduce_only_market(SYM, "SELL", D("0.01"), "pc-none")
        finally:
            await ex.close()

    run(body)


def test_ccxt_keeps_the_listen_key_alive(fake: FakeBinance) -> None:
    """ccxt's keep-alive (every 20 min on Binance; here after 0.2 s) reaches the fake: the
    key stays valid and the stream keeps delivering."""
    fake.set_position(SYM, "0.062")

    async def body() -> None:
        us = stream(fake)
        us.ws.options["listenKeyRefreshRate"] = 200
        try:
            await amount_pushed(us, "0.062")
            kept = asyncio.Event()
            loop = asyncio.get_running_loop()
            fake.on_keep_alive = lambda: loop.call_soon_threadsafe(kept.set)
            await asyncio.wait_for(kept.wait(), WAIT_S)
            fake.set_position(SYM, "0.05")
            await amount_pushed(us, "0.05")
        finally:
            fake.on_keep_alive = None
            await us.close()

    run(body)
    assert fake.state.keep_alives >= 1
