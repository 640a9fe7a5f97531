"""The executor side of the gate, as pure rules: when the resolver acts on a gated plan,
and what a grant records."""

from __future__ import annotations

from decimal import Decimal

from permitchain.apply_layer.gate import due, grant_fields
from permitchain.apply_layer.orders import Submission

SUB = Submission(
    plan_id="0123456789abcdef",
    symbol="BTCUSDT",
    side="SELL",
    qty=Decimal("0.031"),
    close=True,
    position_amt=Decimal("0.062"),
    stop_price=None,
    proposal_ts=100.0,
    permit_wait_ms=Decimal("2.5"),
)


def test_a_grant_records_the_submission_the_resolver_reads() -> None:
    fields = grant_fields(SUB, now=1000.0, claim_s=10)
    assert fields["grant_expires_at"] == "1010.000000" and fields["executor"] == "external"
    assert fields["client_order_id"] == "pc-0123456789abcdef" and fields["qty"] == "0.031"
    assert Submission.from_fields(fields, plan_id=SUB.plan_id) == SUB


def test_the_resolver_leaves_a_grant_until_it_expires() -> None:
    record = {"state": "granted", "grant_expires_at": "1010.0"}
    assert not due(record, 1009.9, 30, sender_gone=False)
    assert due(record, 1010.0, 30, sender_gone=False)
    assert due({"state": "granted", "grant_expires_at": "garbage"}, 0, 30, sender_gone=False)


def test_the_resolver_leaves_a_claim_for_its_report_window_unless_the_bot_is_gone() -> None:
    record = {"state": "claimed", "submitted_at": "1000.0", "sender": "host:1"}
    assert not due(record, 1029.0, 30, sender_gone=False)
    assert due(record, 1030.0, 30, sender_gone=False)
    assert due(record, 1001.0, 30, sender_gone=True)
    assert due({"state": "claimed"}, 0, 30, sender_gone=False)  # unreadable: its rules apply
