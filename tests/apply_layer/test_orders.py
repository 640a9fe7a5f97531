"""The exchange's answer → result status (pure): an order still NEW is never filled."""

from __future__ import annotations

from decimal import Decimal

import pytest

from permitchain.apply_layer.orders import Submission, judge, make_result
from permitchain.contract.models import ResultStatus
from permitchain.exchange.base import OrderInfo, OrderStatus


def order(status: OrderStatus, filled: str) -> OrderInfo:
    return OrderInfo(
        symbol="BTCUSDT",
        client_order_id="pc-x",
        order_id="7",
        side="SELL",
        type="MARKET",
        status=status,
        requested_qty=Decimal("0.046"),
        filled_qty=Decimal(filled),
        avg_price=Decimal(107),
        reduce_only=True,
    )


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        (OrderStatus.FILLED, "0.046", (ResultStatus.FILLED, "ok", True)),
        (OrderStatus.NEW, "0", (ResultStatus.UNKNOWN, "exchange_unknown", False)),
        (OrderStatus.PARTIALLY_FILLED, "0.01", (ResultStatus.UNKNOWN, "exchange_unknown", False)),
        (OrderStatus.CANCELED, "0.01", (ResultStatus.PARTIALLY_FILLED, "ok", True)),
        (OrderStatus.EXPIRED, "0", (ResultStatus.REJECTED, "exchange_rejected", True)),
        (OrderStatus.REJECTED, "0", (ResultStatus.REJECTED, "exchange_rejected", True)),
    ],
)
def test_judge(status: OrderStatus, filled: str, expected: tuple[ResultStatus, str, bool]) -> None:
    o = judge(order(status, filled), "", give_up=False)
    assert (o.status, o.reason, o.final) == expected


def test_no_final_answer_is_unknown_and_final_only_on_give_up() -> None:
    for o in (None, order(OrderStatus.NEW, "0")):
        waiting, given_up = judge(o, "", give_up=False), judge(o, "", give_up=True)
        assert (waiting.status, waiting.final) == (ResultStatus.UNKNOWN, False)
        assert (given_up.status, given_up.reason, given_up.final) == (
            ResultStatus.UNKNOWN,
            "exchange_unknown",
            True,
        )
    assert judge(order(OrderStatus.FILLED, "0.046"), "", give_up=True).status is (
        ResultStatus.FILLED
    )


def test_result_quantities_come_from_the_fill() -> None:
    sub = Submission(
        plan_id="0123456789abcdef",
        symbol="BTCUSDT",
        side="SELL",
        qty=Decimal("0.046"),
        close=True,
        position_amt=Decimal("0.062"),
        stop_price=None,
        proposal_ts=100.0,
        permit_wait_ms=Decimal(3),
    )
    o = order(OrderStatus.CANCELED, "0.02")
    res = make_result(sub, o, judge(o, "", give_up=False), "", 100.5)
    assert (res.status, res.executed, res.filled_qty, res.requested_qty) == (
        ResultStatus.PARTIALLY_FILLED,
        True,
        Decimal("0.02"),
        Decimal("0.046"),
    )
    assert res.reduce_only and res.chain_latency_ms == Decimal(500)
    assert Submission.from_fields(sub.to_fields(), plan_id=sub.plan_id) == sub
    still_new = order(OrderStatus.NEW, "0")
    res = make_result(sub, still_new, judge(still_new, "", give_up=False), "", 101)
    assert (res.status, res.executed) == (ResultStatus.UNKNOWN, False)


def test_sender_dead_only_for_a_gone_process_on_this_host() -> None:
    import os
    import socket
    import subprocess
    import sys

    from permitchain.apply_layer.resolver import sender_dead, sender_id

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()
    assert sender_dead(f"{host}:{gone}")  # that process has exited
    assert not sender_dead(sender_id())  # this process
    assert not sender_dead(f"{host}:{os.getppid()}")  # alive
    assert not sender_dead(f"another-host:{gone}")  # cannot tell: not dead
    assert not sender_dead("")
