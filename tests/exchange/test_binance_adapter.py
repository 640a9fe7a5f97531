"""BinanceExchange against the fake Binance server: reads, orders, modes, stops."""

from __future__ import annotations

from decimal import Decimal

import pytest

from permitchain.contract.errors import OrderOutcomeUnknown, OrderRejected, StopWouldTrigger
from permitchain.exchange.base import Exchange, OrderStatus
from permitchain.exchange.binance import BinanceExchange
from tests.exchange.binance_helpers import run
from tests.fakebinance import FakeBinance

D = Decimal
ORDER = "/fapi/v1/order"
ALGO = "/fapi/v1/algoOrder"


def test_implements_the_protocol(fake: FakeBinance) -> None:
    async def body(ex: BinanceExchange) -> None:
        assert isinstance(ex, Exchange)
        assert ex.name == "binance-demo"

    run(fake, body)


def test_filters_parsed_from_exchange_info(fake: FakeBinance) -> None:
    fake.add_symbol(
        "XRPUSDT",
        step_size="0.1",
        min_qty="0.1",
        max_qty="5000000",
        market_max_qty="2000000",
        min_notional="5",
        tick_size="0.0001",
    )
    fake.add_symbol("ODDUSDT", step_size="0.001", market_step_size="0.01", min_qty="0.001")
    fake.add_symbol("DEADUSDT", status="SETTLING")

    f = run(fake, lambda ex: ex.filters())

    btc = f["BTCUSDT"]
    assert (btc.step_size, btc.min_qty, btc.max_qty) == (D("0.001"), D("0.001"), D("120"))
    assert (btc.min_notional, btc.tick_size) == (D("100"), D("0.1"))
    xrp = f["XRPUSDT"]
    assert (xrp.step_size, xrp.max_qty, xrp.tick_size) == (D("0.1"), D("2000000"), D("0.0001"))
    assert f["SOLUSDT"].step_size == D("1")
    assert f["ODDUSDT"].step_size == D("0.01")  # the market lot step binds market orders
    assert "DEADUSDT" not in f  # not trading
    assert all(isinstance(v.step_size, Decimal) for v in f.values())


def test_filters_cached_then_refreshed(fake: FakeBinance) -> None:
    async def body(ex: BinanceExchange) -> None:
        await ex.filters()
        await ex.filters(["BTCUSDT"])
        assert fake.request_count("/fapi/v1/exchangeInfo") == 1
        ex.refresh_s = 0.0  # every call is now past the refresh interval
        fake.add_symbol("NEWUSDT")
        assert "NEWUSDT" in await ex.filters()
        assert fake.request_count("/fapi/v1/exchangeInfo") == 2

    run(fake, body)


def test_positions_of_many_symbols_in_one_call(fake: FakeBinance) -> None:
    many = fake.add_symbols(300)
    fake.set_position("BTCUSDT", "0.062", entry_price="100")
    fake.set_position("ETHUSDT", "-1.5", entry_price="2400")
    fake.set_position(many[7], "3")
    fake.set_price("BTCUSDT", "101")
    wanted = ["BTCUSDT", "ETHUSDT", "SOLUSDT", *many, "NOPEUSDT"]

    pos = run(fake, lambda ex: ex.fetch_positions(wanted))

    assert fake.request_count("/fapi/v3/positionRisk") == 1
    assert set(pos) == set(wanted) - {"NOPEUSDT"}  # every listed symbol; unknown ones absent
    btc = pos["BTCUSDT"]
    assert (btc.amt, btc.side, btc.entry_price, btc.mark_price) == (
        D("0.062"),
        "LONG",
        D("100"),
        D("101"),
    )
    assert btc.unrealized_pnl == D("0.062")
    assert btc.leverage == D(20)
    assert (pos["ETHUSDT"].amt, pos["ETHUSDT"].side) == (D("-1.5"), "SHORT")
    assert pos[many[7]].amt == D(3)
    assert (pos["SOLUSDT"].amt, pos["SOLUSDT"].side) == (D(0), "NONE")


def test_positions_without_symbols_lists_every_trading_symbol(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    pos = run(fake, lambda ex: ex.fetch_positions())
    assert set(pos) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert pos["ETHUSDT"].amt == 0


def test_mark_prices_in_one_call(fake: FakeBinance) -> None:
    fake.set_price("BTCUSDT", "64000.1")
    prices = run(fake, lambda ex: ex.mark_prices(["BTCUSDT", "ETHUSDT"]))
    assert prices == {"BTCUSDT": D("64000.1"), "ETHUSDT": D("2500")}
    assert fake.request_count("/fapi/v1/premiumIndex") == 1


def test_reduce_only_close_fills_with_our_client_order_id(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062", entry_price="100")

    o = run(fake, lambda ex: ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.046"), "pc-1"))

    assert (o.status, o.client_order_id, o.side, o.type) == (
        OrderStatus.FILLED,
        "pc-1",
        "SELL",
        "MARKET",
    )
    assert (o.requested_qty, o.filled_qty, o.avg_price, o.reduce_only) == (
        D("0.046"),
        D("0.046"),
        D("100"),
        True,
    )
    assert fake.position("BTCUSDT") == "0.016"
    [sent] = fake.orders()
    assert sent["clientOrderId"] == "pc-1" and sent["reduceOnly"] is True


@pytest.mark.parametrize(
    ("qty", "sent"),
    [
        (D("0.0469999"), "0.046"),  # truncated, never rounded up to 0.047
        (D("0.0465"), "0.046"),
        (D("4.6E-2"), "0.046"),  # no exponent on the wire (the fake refuses one: -1100)
        (D("0.046000"), "0.046"),
        (D("0.062"), "0.062"),
    ],
)
def test_quantity_truncated_to_step(fake: FakeBinance, qty: Decimal, sent: str) -> None:
    fake.set_position("BTCUSDT", "0.062")
    o = run(fake, lambda ex: ex.place_reduce_only_market("BTCUSDT", "SELL", qty, "pc-q"))
    assert o.requested_qty == D(sent)
    assert fake.orders()[0]["origQty"] == sent


def test_whole_step_symbol_truncates(fake: FakeBinance) -> None:
    fake.set_position("SOLUSDT", "-7")
    o = run(fake, lambda ex: ex.place_reduce_only_market("SOLUSDT", "BUY", D("5.99"), "pc-s"))
    assert o.filled_qty == D(5)
    assert fake.position("SOLUSDT") == "-2"


def test_below_one_step_is_refused_without_sending(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    with pytest.raises(OrderRejected):
        run(fake, lambda ex: ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.0009"), "pc-x"))
    assert fake.request_count(ORDER, "POST") == 0


def test_fetch_order_by_client_order_id(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        assert await ex.fetch_order("BTCUSDT", "pc-none") is None  # -2013 → None
        await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-f")
        found = await ex.fetch_order("BTCUSDT", "pc-f")
        assert found is not None and found.status is OrderStatus.FILLED
        assert found.filled_qty == D("0.01")

    run(fake, body)


def test_same_client_order_id_twice_returns_the_existing_order(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        first = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-d")
        again = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-d")
        assert again.order_id == first.order_id

    run(fake, body)
    assert fake.request_count(ORDER, "POST") == 1
    assert fake.position("BTCUSDT") == "0.052"


def test_missed_lookup_is_unknown_and_the_order_is_never_sent_again(fake: FakeBinance) -> None:
    """Binance refuses a client order id only among *open* orders: a filled order's id sent
    again executes again. So the same id a second time is looked up, and when that look-up
    misses (answer wrongly -2013) the outcome is unknown, for the resolver: no second POST."""
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-d")
        fake.fail_next(path=ORDER, method="GET", code=-2013, msg="Order does not exist.")
        with pytest.raises(OrderOutcomeUnknown):
            await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-d")

    run(fake, body)
    assert fake.request_count(ORDER, "POST") == 1
    assert len(fake.orders()) == 1
    assert fake.position("BTCUSDT") == "0.052"


def test_duplicate_refused_by_exchange_resolves_to_the_open_order(fake: FakeBinance) -> None:
    """-4116 (an open order holds the id, e.g. sent by a previous process): the order that
    exists is returned, nothing else is sent."""
    fake.set_position("BTCUSDT", "0.062")
    fake.set_fill(False)

    async def body(ex: BinanceExchange) -> None:
        await ex._call(
            "order",
            "fapiPrivatePostOrder",
            {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "MARKET",
                "quantity": "0.01",
                "reduceOnly": "true",
                "newClientOrderId": "pc-o",
            },
        )
        o = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-o")
        assert (o.client_order_id, o.status) == ("pc-o", OrderStatus.NEW)

    run(fake, body)
    assert len(fake.orders()) == 1


@pytest.mark.parametrize(
    ("pos_side", "amt", "side"), [("LONG", "0.062", "SELL"), ("SHORT", "-0.062", "BUY")]
)
def test_hedge_mode_sends_position_side(
    fake: FakeBinance, pos_side: str, amt: str, side: str
) -> None:
    fake.set_dual(True)
    fake.set_position("BTCUSDT", amt, position_side=pos_side)

    async def body(ex: BinanceExchange) -> None:
        pos = await ex.fetch_positions(["BTCUSDT"])
        assert pos["BTCUSDT"].amt == D(amt)
        o = await ex.place_reduce_only_market("BTCUSDT", side, D("0.046"), "pc-h")  # type: ignore[arg-type]
        assert o.status is OrderStatus.FILLED and o.reduce_only

    run(fake, body)
    [sent] = fake.orders()
    # the fake refuses reduceOnly in hedge mode (-1106), so this also proves it was not sent
    assert sent["positionSide"] == pos_side
    assert fake.position("BTCUSDT", pos_side) == str(D(amt) - D(amt) * 46 / 62)


def test_hedge_mode_fixed_by_setting_skips_detection(fake: FakeBinance) -> None:
    fake.set_dual(True)
    fake.set_position("BTCUSDT", "0.062", position_side="LONG")
    run(
        fake,
        lambda ex: ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-h"),
        hedge_mode=True,
    )
    assert fake.request_count("/fapi/v1/positionSide/dual") == 0


def test_hedge_both_sides_open_gives_no_position(fake: FakeBinance) -> None:
    fake.set_dual(True)
    fake.set_position("BTCUSDT", "0.062", position_side="LONG")
    fake.set_position("BTCUSDT", "-0.01", position_side="SHORT")
    fake.set_position("ETHUSDT", "-2", position_side="SHORT")
    pos = run(fake, lambda ex: ex.fetch_positions(["BTCUSDT", "ETHUSDT"]))
    assert "BTCUSDT" not in pos  # ambiguous: no snapshot, P3.3 denies
    assert pos["ETHUSDT"].amt == D(-2)


def test_position_mode_switch_is_picked_up_after_4061(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062", position_side="LONG")

    async def body(ex: BinanceExchange) -> None:
        await ex.fetch_order("BTCUSDT", "warm-up")  # one-way mode learnt and cached
        await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-m0")
        fake.set_dual(True)
        with pytest.raises(OrderRejected) as e:
            await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-m1")
        assert e.value.code == -4061
        o = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-m2")
        assert o.status is OrderStatus.FILLED

    fake.set_position("BTCUSDT", "0.062")
    run(fake, body)


def test_stop_market_replaces_our_previous_stop(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062", entry_price="100")
    fake.set_position("ETHUSDT", "1")

    async def body(ex: BinanceExchange) -> None:
        await ex.place_stop_market("ETHUSDT", "SELL", D("2000"), D("1"), "pc-other-sl")
        s1 = await ex.place_stop_market("BTCUSDT", "SELL", D("99.5"), D("0.062"), "pc-a-sl")
        s2 = await ex.place_stop_market("BTCUSDT", "SELL", D("99.87"), D("0.0169"), "pc-b-sl")
        assert s1.status is OrderStatus.NEW and s1.reduce_only
        assert (s2.type, s2.stop_price, s2.requested_qty) == ("STOP_MARKET", D("99.8"), D("0.016"))
        again = await ex.fetch_order("BTCUSDT", "pc-a-sl")
        assert again is not None and again.status is OrderStatus.CANCELED

    fake.set_position("BTCUSDT", "0.062")
    # An operator's own stop (not our client id prefix) is left alone.
    fake.set_dual(False)
    run(fake, body)
    algos = {o["clientAlgoId"]: o for o in fake.algo_orders()}
    assert algos["pc-b-sl"]["algoStatus"] == "NEW"
    assert algos["pc-b-sl"]["workingType"] == "MARK_PRICE"
    assert algos["pc-b-sl"]["reduceOnly"] is True
    assert algos["pc-other-sl"]["algoStatus"] == "NEW"  # other symbol untouched
    assert fake.request_count(ORDER, "POST") == 0  # stops go to the algo endpoint only
    assert fake.request_count(ALGO, "POST") == 3


def test_stop_market_leaves_foreign_stops(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> None:
        # placed by hand on the exchange (through the same API), not by the chain
        await ex._call(
            "order",
            "fapiPrivatePostAlgoOrder",
            {
                "algoType": "CONDITIONAL",
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "quantity": "0.01",
                "triggerPrice": "90",
                "reduceOnly": "true",
                "clientAlgoId": "manual-1",
            },
        )
        await ex.place_stop_market("BTCUSDT", "SELL", D("99"), D("0.062"), "pc-c-sl")

    run(fake, body)
    assert {o["clientAlgoId"]: o["algoStatus"] for o in fake.algo_orders()} == {
        "manual-1": "NEW",
        "pc-c-sl": "NEW",
    }


@pytest.mark.parametrize(
    ("amt", "side", "asked", "sent"),
    [
        ("-0.05", "BUY", "100.01", "100.1"),
        ("-0.05", "BUY", "101.27", "101.3"),
        ("0.05", "SELL", "99.99", "99.9"),
        ("0.05", "SELL", "98.71", "98.7"),
    ],
)
def test_stop_trigger_rounds_away_from_the_mark(
    fake: FakeBinance, amt: str, side: str, asked: str, sent: str
) -> None:
    """A SELL stop rounds down, a BUY stop up (mark 100, tick 0.1): rounding never moves a
    stop to where it would trigger at once (Binance refuses that, -2021)."""
    fake.set_position("BTCUSDT", amt)
    o = run(
        fake,
        lambda ex: ex.place_stop_market(
            "BTCUSDT",
            side,
            D(asked),
            D("0.05"),  # type: ignore[arg-type]
            "pc-s-sl",
        ),
    )
    assert o.stop_price == D(sent)
    assert fake.algo_orders()[0]["triggerPrice"] == sent


@pytest.mark.parametrize("code", [-2021, -4142])
def test_stop_already_passed_raises_stop_would_trigger(fake: FakeBinance, code: int) -> None:
    fake.set_position("BTCUSDT", "0.05")
    fake.set_immediate_trigger_code(code)
    with pytest.raises(StopWouldTrigger) as e:
        run(
            fake,
            lambda ex: ex.place_stop_market("BTCUSDT", "SELL", D("100.04"), D("0.05"), "pc-x-sl"),
        )
    assert e.value.code == code
    assert fake.algo_orders() == []


def test_algo_lifecycle_maps_onto_order_status(fake: FakeBinance) -> None:
    """TRIGGERING/TRIGGERED are not final (never FILLED); FINISHED is FILLED only when
    actualQty covers the stop, else CANCELED with what was filled; the quantities and price
    come from actualQty/actualPrice."""
    fake.set_position("BTCUSDT", "0.05")

    async def body(ex: BinanceExchange) -> list[tuple[OrderStatus, Decimal, Decimal | None]]:
        await ex.place_stop_market("BTCUSDT", "SELL", D("99"), D("0.05"), "pc-l-sl")
        seen = []
        for status, qty, price in [
            ("TRIGGERING", "", ""),
            ("TRIGGERED", "", ""),
            ("TRIGGERED", "0.02", "98.9"),
            ("FINISHED", "0", ""),
            ("FINISHED", "0.02", "98.9"),
            ("FINISHED", "0.05", "98.9"),
            ("REJECTED", "", ""),
            ("EXPIRED", "", ""),
            ("SOMETHING_NEW", "", ""),
        ]:
            fake.set_algo_state("pc-l-sl", status, qty, price)
            o = await ex.fetch_order("BTCUSDT", "pc-l-sl")
            assert o is not None
            seen.append((o.status, o.filled_qty, o.avg_price))
        return seen

    N, P, F, C = (
        OrderStatus.NEW,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
    )
    assert run(fake, body) == [
        (N, D(0), None),
        (N, D(0), None),
        (P, D("0.02"), D("98.9")),
        (C, D(0), None),
        (C, D("0.02"), D("98.9")),
        (F, D("0.05"), D("98.9")),
        (OrderStatus.REJECTED, D(0), None),
        (OrderStatus.EXPIRED, D(0), None),
        (N, D(0), None),
    ]


def test_a_stop_the_mark_crosses_fills_on_the_exchange(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.05")

    async def body(ex: BinanceExchange) -> None:
        await ex.place_stop_market("BTCUSDT", "SELL", D("99"), D("0.05"), "pc-t-sl")
        fake.set_price("BTCUSDT", "98.5")
        o = await ex.fetch_order("BTCUSDT", "pc-t-sl")
        assert o is not None
        assert (o.status, o.filled_qty, o.avg_price) == (OrderStatus.FILLED, D("0.05"), D("98.5"))

    run(fake, body)
    assert fake.position("BTCUSDT") == "0"
    [algo] = fake.algo_orders()
    assert algo["algoStatus"] == "FINISHED" and algo["actualOrderId"] != ""


def test_market_outcomes_expired_and_partial(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    fake.set_market_outcome("EXPIRED_IN_MATCH")
    fake.set_market_outcome("PARTIAL", filled="0.01")

    async def body(ex: BinanceExchange) -> None:
        a = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.03"), "pc-e1")
        assert (a.status, a.filled_qty) == (OrderStatus.EXPIRED, D(0))
        b = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.03"), "pc-e2")
        assert (b.status, b.filled_qty, b.avg_price) == (OrderStatus.EXPIRED, D("0.01"), D(100))

    run(fake, body)
    assert fake.position("BTCUSDT") == "0.052"
