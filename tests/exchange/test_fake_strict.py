"""The fake Binance refuses and answers as Binance documents (docs/exchanges.md §6 lists each
rule and where Binance's material is silent what was assumed). The requests go through ccxt
(the adapter's ``_call``), signed, exactly as the chain's own requests do."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from permitchain.contract.errors import OrderOutcomeUnknown, OrderRejected
from permitchain.exchange.binance import BinanceExchange
from tests.exchange.binance_helpers import run
from tests.fakebinance import FakeBinance

D = Decimal
ORDER, ALGO = "/fapi/v1/order", "/fapi/v1/algoOrder"


def market(**over: str) -> dict[str, str]:
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "MARKET",
        "quantity": "0.01",
        "reduceOnly": "true",
        "newClientOrderId": "pc-raw",
        "newOrderRespType": "RESULT",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v != ""}


def stop(**over: str) -> dict[str, str]:
    params = {
        "algoType": "CONDITIONAL",
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "STOP_MARKET",
        "quantity": "0.01",
        "triggerPrice": "95",
        "workingType": "MARK_PRICE",
        "reduceOnly": "true",
        "clientAlgoId": "pc-raw-sl",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v != ""}


def send(fake: FakeBinance, method: str, params: dict[str, str]) -> Any:
    async def body(ex: BinanceExchange) -> Any:
        return await ex._call("order", method, params)

    return run(fake, body)


def refused(fake: FakeBinance, method: str, params: dict[str, str]) -> int | None:
    with pytest.raises(OrderRejected) as e:
        send(fake, method, params)
    return e.value.code


def test_client_order_id_is_refused_only_among_open_orders(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    send(fake, "fapiPrivatePostOrder", market())  # filled: no longer open
    again = send(fake, "fapiPrivatePostOrder", market())  # Binance takes the id again
    assert again["status"] == "FILLED" and again["clientOrderId"] == "pc-raw"
    assert fake.position("BTCUSDT") == "0.042"
    fake.set_fill(False)
    send(fake, "fapiPrivatePostOrder", market(newClientOrderId="pc-open"))  # stays NEW
    assert refused(fake, "fapiPrivatePostOrder", market(newClientOrderId="pc-open")) == -4116


def test_algo_client_id_is_refused_only_among_open_algo_orders(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    first = send(fake, "fapiPrivatePostAlgoOrder", stop())
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop()) == -4116
    send(fake, "fapiPrivateDeleteAlgoOrder", {"algoId": str(first["algoId"])})
    again = send(fake, "fapiPrivatePostAlgoOrder", stop())
    assert again["algoId"] != first["algoId"]


@pytest.mark.parametrize(
    ("side", "trigger"), [("SELL", "100"), ("SELL", "100.3"), ("BUY", "100"), ("BUY", "99.9")]
)
def test_stop_that_would_trigger_at_once_is_refused(
    fake: FakeBinance, side: str, trigger: str
) -> None:
    fake.set_position("BTCUSDT", "0.062" if side == "SELL" else "-0.062")
    fake.set_price("BTCUSDT", "100")
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop(side=side, triggerPrice=trigger)) == -2021
    fake.set_immediate_trigger_code(-4142)
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop(side=side, triggerPrice=trigger)) == -4142
    assert fake.algo_orders() == []


def test_quantity_and_price_filters_answer_binance_codes(fake: FakeBinance) -> None:
    fake.add_symbol("ODDUSDT", step_size="0.005", min_qty="0.01", tick_size="0.5", price="100")
    fake.set_position("ODDUSDT", "1")
    sym = {"symbol": "ODDUSDT", "newClientOrderId": "pc-odd"}
    assert refused(fake, "fapiPrivatePostOrder", market(**sym, quantity="0.005")) == -4004
    assert refused(fake, "fapiPrivatePostOrder", market(**sym, quantity="0.012")) == -4023
    assert refused(fake, "fapiPrivatePostOrder", market(**sym, quantity="0.0125")) == -1111
    assert refused(fake, "fapiPrivatePostOrder", market(**sym, quantity="0")) == -4003
    algo = {"symbol": "ODDUSDT", "clientAlgoId": "pc-odd-sl", "quantity": "0.01"}
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop(**algo, triggerPrice="90.3")) == -4014
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop(**algo, triggerPrice="90.25")) == -1111
    assert fake.orders() == [] and fake.algo_orders() == []


@pytest.mark.parametrize("coid", ["pc-" + "a" * 38, "pc with space", "pc-é"])
def test_client_order_id_outside_binance_pattern_is_refused(fake: FakeBinance, coid: str) -> None:
    fake.set_position("BTCUSDT", "0.062")
    assert refused(fake, "fapiPrivatePostOrder", market(newClientOrderId=coid)) == -4015
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop(clientAlgoId=coid)) == -4015
    assert fake.position("BTCUSDT") == "0.062"


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"positionSide": "long"}, -4060),
        ({"positionSide": "MIDDLE"}, -4060),
        ({"side": "sell"}, -1117),
        ({"type": "market"}, -1116),
        ({"reduceOnly": "True"}, -4062),
        ({"reduceOnly": "yes"}, -4062),
        ({"newOrderRespType": "FULL"}, -1136),
        ({"timeInForce": "DAY"}, -1115),
        ({"workingType": "MARK"}, -4031),
        ({"quantityy": "0.01"}, -1104),
    ],
)
def test_unknown_values_and_parameters_are_refused(
    fake: FakeBinance, over: dict[str, str], code: int
) -> None:
    fake.set_position("BTCUSDT", "0.062")
    assert refused(fake, "fapiPrivatePostOrder", market(**over)) == code
    assert fake.position("BTCUSDT") == "0.062"  # reduceOnly=True never flips a position


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"positionSide": "long"}, -4060),
        ({"workingType": "MARK"}, -4031),
        ({"reduceOnly": "True"}, -4062),
        ({"algoType": "conditional"}, -1116),
        ({"bogus": "1"}, -1104),
    ],
)
def test_algo_unknown_values_and_parameters_are_refused(
    fake: FakeBinance, over: dict[str, str], code: int
) -> None:
    fake.set_position("BTCUSDT", "0.062")
    assert refused(fake, "fapiPrivatePostAlgoOrder", stop(**over)) == code


def test_resting_reduce_only_orders_count_against_the_position(fake: FakeBinance) -> None:
    """-4118: a resting reduce-only order plus the new one would close more than is held.
    Untriggered conditional (algo) orders do not count (docs/exchanges.md §6)."""
    fake.set_position("BTCUSDT", "0.062")
    send(fake, "fapiPrivatePostAlgoOrder", stop(quantity="0.062"))  # a stop for it all
    fake.set_fill(False)
    send(fake, "fapiPrivatePostOrder", market(quantity="0.05", newClientOrderId="pc-rest"))
    fake.set_fill(True)
    assert refused(fake, "fapiPrivatePostOrder", market(quantity="0.02")) == -4118
    assert fake.position("BTCUSDT") == "0.062"
    send(fake, "fapiPrivatePostOrder", market(quantity="0.012"))  # 0.05 + 0.012 fits
    assert fake.position("BTCUSDT") == "0.05"


@pytest.mark.parametrize(
    ("outcome", "status", "filled", "left"),
    [
        ("EXPIRED", "EXPIRED", "0", "0.062"),
        ("EXPIRED_IN_MATCH", "EXPIRED_IN_MATCH", "0", "0.062"),
        ("PARTIAL", "EXPIRED", "0.004", "0.058"),
    ],
)
def test_market_outcomes_can_be_injected(
    fake: FakeBinance, outcome: str, status: str, filled: str, left: str
) -> None:
    fake.set_position("BTCUSDT", "0.062")
    fake.set_market_outcome(outcome, filled="0.004")
    o = send(fake, "fapiPrivatePostOrder", market())
    assert (o["status"], o["executedQty"]) == (status, filled)
    assert fake.position("BTCUSDT") == left
    again = send(fake, "fapiPrivatePostOrder", market(newClientOrderId="pc-next"))
    assert again["status"] == "FILLED"  # one order only


def test_503_unknown_is_carried_out_and_503_unavailable_is_not(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")
    fake.fail_next(path=ORDER, method="POST", mode="unknown503")
    with pytest.raises(OrderOutcomeUnknown):
        send(fake, "fapiPrivatePostOrder", market(newClientOrderId="pc-u"))
    assert fake.position("BTCUSDT") == "0.052"  # it was carried out
    fake.fail_next(path=ORDER, method="POST", mode="unavailable503")
    with pytest.raises(OrderRejected) as e:
        send(fake, "fapiPrivatePostOrder", market(newClientOrderId="pc-n"))
    assert e.value.code == 503
    assert fake.position("BTCUSDT") == "0.052"  # it was not


def test_rate_limit_headers_are_sent_and_read(fake: FakeBinance) -> None:
    fake.set_position("BTCUSDT", "0.062")

    async def body(ex: BinanceExchange) -> dict[str, int]:
        await ex.fetch_positions(["BTCUSDT"])
        before = ex.rate_usage()
        await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.01"), "pc-rl")
        after = ex.rate_usage()
        assert after["used_weight_1m"] > before["used_weight_1m"] > 0
        return after

    usage = run(fake, body)
    assert usage["order_count_1m"] == 1 and usage["order_count_10s"] == 1
