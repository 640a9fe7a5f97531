"""``permit_json``: one body for the permit's value and its audit entry, the same bytes as
signing with ``model_copy`` and serialising the signed permit."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from permitchain.contract.models import GovernorPermit, P33Allow, P33Deny, parse_p33
from permitchain.contract.signing import HmacSigner, sign, verify
from permitchain.runtime.permits import permit_json

NOW = time.time()
PID = "0123456789abcdef"
PERMITS = [
    GovernorPermit(
        plan_id=PID,
        symbol="BTCUSDT",
        decision="GRANT",
        granted=True,
        reason="testnet_auto_approve",
        computed_qty=Decimal("0.046"),
        computed_notional=None,
        mode="testnet",
        created_at=NOW,
        expires_at=NOW + 60,
    ),
    P33Allow(
        plan_id=PID,
        symbol="BTCUSDT",
        safe_close_qty=Decimal("0.046"),
        side="LONG",
        exchange_position_amt=Decimal("0.062"),
        ledger_position_amt=Decimal("0.0620"),
        snapshot_age_sec=Decimal("0.25"),
        created_at=NOW,
        expires_at=NOW + 60,
    ),
    P33Deny(
        plan_id=PID,
        symbol="BTCUSDT",
        reason="reconcile_required_qty_mismatch",
        context={"diff": "0.01", "ledger_amt": "0.5"},
        created_at=NOW,
        expires_at=NOW + 60,
    ),
]


@pytest.mark.parametrize("permit", PERMITS, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("key", [None, "k3y"])
def test_the_same_value_and_audit_object_as_signing_a_copy(
    permit: GovernorPermit | P33Allow | P33Deny, key: str | None
) -> None:
    signed = permit if key is None else permit.model_copy(update={"sig": sign(permit.body(), key)})
    value, issued = permit_json(permit, None if key is None else HmacSigner(key))
    assert value == signed.to_json()
    assert issued == signed.issued() and list(issued) == list(signed.issued())  # same order
    if key is not None:
        assert verify(issued, key)
    if not isinstance(permit, GovernorPermit):
        assert parse_p33(value).to_json() == value
