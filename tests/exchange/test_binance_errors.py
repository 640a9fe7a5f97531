"""Every failure ends in the right exception of our tree, with the exchange's code kept."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from ccxt.base import errors as cx

from permitchain.contract.errors import (
    ClockSkew,
    ExchangeError,
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    OrderRejected,
    RateLimited,
)
from permitchain.exchange.base import OrderStatus
from permitchain.exchange.binance import BinanceExchange, _Client
from tests.exchange.binance_helpers import adapter, run
from tests.fakebinance import API_KEY, API_SECRET, FakeBinance

D = Decimal
ORDER = "/fapi/v1/order"


def close(ex: BinanceExchange, qty: str = "0.046", coid: str = "pc-e") -> Any:
    return ex.place_reduce_only_market("BTCUSDT", "SELL", D(qty), coid)


@pytest.mark.parametrize(
    ("code", "msg"),
    [
        (-1111, "Precision is over the maximum defined for this asset."),
        (-4164, "Order's notional must be no smaller than 100 (unless you choose reduce only)."),
        (-2019, "Margin is insufficient."),
        (-4003, "Quantity less than or equal to zero."),
        (-2022, "ReduceOnly Order is rejected."),
    ],
)
def test_final_rejections(fake: FakeBinance, code: int, msg: str) -> None:
    fake.set_position("BTCUSDT", "0.062")
    fake.fail_next(path=ORDER, method="POST", code=code, msg=msg)
    with pytest.raises(OrderRejected) as e:
        run(fake, close)
    assert e.value.code == code
    assert fake.orders() == [] and fake.position("BTCUSDT") == "0.062"


@pytest.mark.parametrize(("amt", "qty"), [("0.062", "0.063"), ("-0.062", "0.01"), ("0", "0.01")])
def test_reduce_only_that_would_not_reduce_is_rejected(
    fake: FakeBinance, amt: str, qty: str
) -> None:
    fake.set_position("BTCUSDT", amt)
    with pytest.raises(OrderRejected) as e:
        run(fake, lambda ex: close(ex, qty))
    assert e.value.code == -2022
    assert fake.position("BTCUSDT") == amt


def test_notional_below_minimum_without_reduce_only_is_rejected(fake: FakeBinance) -> None:
    async def body(ex: BinanceExchange) -> None:
        await ex._call(
            "order",
            "fapiPrivatePostOrder",
            {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.5"},
        )

    with pytest.raises(OrderRejected) as e:
        run(fake, body)
    assert e.value.code == -4164


@pytest.mark.parametrize(
    "fault",
    [
        {
            "code": -1007,
            "status": 408,
            "accept": True,
            "msg": "Timeout waiting for response "
            "from backend server. Send status unknown; execution status unknown.",
        },
        {"code": None, "status": 502, "accept": True, "msg": "Bad Gateway"},
        {"code": -1001, "status": 500, "accept": True, "msg": "Internal error"},
        {"mode": "drop", "accept": True},
        {"mode": "hang", "accept": True},
    ],
    ids=["-1007", "502", "500", "connection-dropped", "timeout"],
)
def test_order_accepted_but_answer_lost_resolves_by_client_order_id(
    fake: FakeBinance, fault: dict[str, Any]
) -> None:
    """The exchange took the order, we did not get the answer: OrderOutcomeUnknown, and a
    look-up by client order id finds exactly that one order. Nothing is sent again."""
    fake.set_position("BTCUSDT", "0.062")
    fake.fail_next(path=ORDER, method="POST", **fault)

    async def body(ex: BinanceExchange) -> None:
        with pytest.raises(OrderOutcomeUnknown):
            await close(ex)
        found = await ex.fetch_order("BTCUSDT", "pc-e")
        assert found is not None and found.status is OrderStatus.FILLED
        assert found.filled_qty == D("0.046")

    run(fake, body, timeout_s=0.5)
    assert fake.request_count(ORDER, "POST") == 1
    assert len(fake.orders()) == 1 and fake.position("BTCUSDT") == "0.016"


def test_order_not_accepted_and_answer_lost_resolves_to_none(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    fake.fail_next(path=ORDER, method="POST", status=503, msg="Service Unavailable")

    async def body(ex: BinanceExchange) -> None:
        with pytest.raises(OrderOutcomeUnknown) as e:
            await close(ex)
        assert e.value.code == 503
        assert await ex.fetch_order("BTCUSDT", "pc-e") is None

    run(fake, body)
    assert fake.orders() == []


@pytest.mark.parametrize(("status", "code", "retry"), [(429, -1003, 7), (418, -1003, 120)])
def test_rate_limited(fake: FakeBinance, status: int, code: int, retry: int) -> None:
    fake.set_position("BTCUSDT", "0.062")
    fake.fail_next(
        count=2,
        path="/fapi/v3/positionRisk",
        status=status,
        code=code,
        retry_after_s=retry,
        msg="Too many requests.",
    )
    fake.fail_next(path=ORDER, method="POST", status=status, code=code, retry_after_s=retry)

    async def body(ex: BinanceExchange) -> None:
        for call in (ex.fetch_positions(["BTCUSDT"]), close(ex)):
            with pytest.raises(RateLimited) as e:
                await call
            assert (e.value.code, e.value.retry_after_s) == (code, retry)

    run(fake, body)
    assert fake.orders() == []


def test_read_failures_are_exchange_unavailable(fake: FakeBinance) -> None:
    fake.fail_next(path="/fapi/v3/positionRisk", status=502, msg="Bad Gateway")
    fake.fail_next(path="/fapi/v1/premiumIndex", mode="hang")
    # aiohttp retries an idempotent GET once on a dropped keep-alive connection: drop both
    fake.fail_next(count=2, path="/fapi/v1/exchangeInfo", mode="drop")

    async def body(ex: BinanceExchange) -> None:
        with pytest.raises(ExchangeUnavailable):
            await ex.filters()
        with pytest.raises(ExchangeUnavailable) as e:
            await ex.fetch_positions(["BTCUSDT"])
        assert e.value.code == 502
        with pytest.raises(ExchangeUnavailable):
            await ex.mark_prices()

    run(fake, body, timeout_s=0.3)


def test_clock_skew_resyncs_then_retry_works(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        await ex.fetch_positions(["BTCUSDT"])  # clock synced: offset 0
        fake.set_clock_offset(-30_000)  # the exchange's clock is now 30 s behind ours
        with pytest.raises(ClockSkew) as e:
            await close(ex)
        assert e.value.code == -1021
        assert fake.orders() == []
        order = await close(ex)  # the caller retries; the adapter has resynced
        assert order.status is OrderStatus.FILLED

    run(fake, body)


@pytest.mark.parametrize(
    ("key", "secret", "code"), [(API_KEY, "wrong", -1022), ("wrong", API_SECRET, -2015)]
)
def test_bad_signature_or_key_is_refused(
    fake: FakeBinance, key: str, secret: str, code: int
) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        with pytest.raises(ExchangeUnavailable) as e:
            await ex.fetch_positions(["BTCUSDT"])
        assert e.value.code == code
        with pytest.raises(ExchangeError) as e2:  # refused on the look-up before sending
            await close(ex)
        assert e2.value.code == code

    run(fake, body, api_key=key, api_secret=secret)
    assert fake.orders() == []
    assert secret not in str(fake.requests())


def test_messages_carry_no_secret_and_no_signature(fake: FakeBinance) -> None:
    fake.fail_next(path=ORDER, method="GET", status=502, msg="Bad Gateway")

    async def body(ex: BinanceExchange) -> ExchangeError:
        with pytest.raises(ExchangeUnavailable) as e:
            await ex.fetch_order("BTCUSDT", "pc-x")
        assert API_SECRET not in repr(ex) and API_KEY not in repr(ex)
        return e.value

    err = run(fake, body)
    assert "signature=…" in str(err) and API_SECRET not in str(err)


def test_ccxt_error_table_applies_to_the_overridden_url(fake: FakeBinance) -> None:
    """Stock ccxt picks Binance's linear (USDⓈ-M) error table by hostname, so pointed at
    another host it maps -2022 to a bare ExchangeError. Our client keeps the table."""
    fake.set_position("BTCUSDT", "0.062")
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "MARKET",
        "quantity": "1",
        "reduceOnly": "true",
    }

    async def raised(client: Any) -> type[Exception]:
        for table in ("api", "demo"):
            for k, v in client.urls[table].items():
                if k.startswith("fapi"):
                    client.urls[table][k] = fake.url + "/" + v.split("/", 3)[3]
        try:
            await client.fapiPrivatePostOrder(dict(params))
        except cx.BaseError as e:
            return type(e)
        finally:
            await client.close()
        raise AssertionError("no error")

    async def both() -> tuple[type[Exception], type[Exception]]:
        cfg = {"apiKey": API_KEY, "secret": API_SECRET, "timeout_on_exit": 0}
        stock = await raised(ccxt_async.binanceusdm(cfg))
        ours = await raised(_Client(cfg, fake.url))
        return stock, ours

    stock, ours = asyncio.run(both())
    assert stock is cx.ExchangeError  # the table was lost
    assert ours is cx.InvalidOrder  # {"code":-2022} → InvalidOrder, as on fapi.binance.com


def test_urls_all_point_at_the_base(fake: FakeBinance) -> None:
    for demo in (True, False):
        ex = adapter(fake, demo=demo)
        urls = ex._api.urls
        for table in ("api", "demo"):
            fapi = {k: v for k, v in urls[table].items() if k.startswith("fapi")}
            assert fapi and all(v.startswith(fake.url + "/") for v in fapi.values())
        assert "binance.com" not in str({t: urls[t] for t in ("api", "demo", "test")})
        assert (urls["api"] is urls["demo"]) is demo  # demo trading swaps the tables
        asyncio.run(ex.close())


def test_ccxt_load_markets_works_against_the_fake(fake: FakeBinance) -> None:
    """ccxt's own market loading (not used by the adapter) finds every endpoint it needs."""

    async def body(ex: BinanceExchange) -> int:
        markets = await ex._api.load_markets()
        await ex._api.fetch_positions()
        return len(markets)

    assert run(fake, body) == 3
    assert fake.unknown_paths() == []


def test_unexpected_answers_are_translated_too(fake: FakeBinance) -> None:
    """A 200 with a body we cannot parse is no crash: a read fails, an order is unknown."""
    fake.set_position("BTCUSDT", "0.062")
    fake.fail_next(path="/fapi/v3/positionRisk", mode="garbage")
    fake.fail_next(path=ORDER, method="POST", mode="garbage")

    async def body(ex: BinanceExchange) -> None:
        with pytest.raises(ExchangeUnavailable):
            await ex.fetch_positions(["BTCUSDT"])
        with pytest.raises(OrderOutcomeUnknown):
            await close(ex)
        found = await ex.fetch_order("BTCUSDT", "pc-e")
        assert found is not None and found.filled_qty == D("0.046")

    run(fake, body)


def test_slow_exchange_times_out_as_unavailable(fake: FakeBinance) -> None:
    fake.set_delay(1000)
    with pytest.raises(ExchangeUnavailable):
        run(fake, lambda ex: ex.mark_prices(), timeout_s=0.2)


def test_order_left_new_is_reported_new(fake: FakeBinance) -> None:
    """An accepted, unfilled order is NEW with nothing filled: never reported filled."""
    fake.set_position("BTCUSDT", "0.062")
    fake.set_fill(False)
    o = run(fake, close)
    assert (o.status, o.filled_qty, o.avg_price) == (OrderStatus.NEW, D(0), None)
    assert fake.position("BTCUSDT") == "0.062"


@pytest.mark.parametrize("code", [-1111, -4023, -4014])
def test_orders_use_cached_filters_until_a_filter_error(fake: FakeBinance, code: int) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        ex.refresh_s = 0.0  # reads would refresh every time; orders keep their cache
        await close(ex, "0.001", "pc-1")
        await close(ex, "0.001", "pc-2")
        assert fake.request_count("/fapi/v1/exchangeInfo") == 1
        fake.fail_next(path=ORDER, method="POST", code=code, msg="filter")
        with pytest.raises(OrderRejected):
            await close(ex, "0.001", "pc-3")
        await close(ex, "0.001", "pc-4")  # the filters were read again first
        assert fake.request_count("/fapi/v1/exchangeInfo") == 2

    run(fake, body)
