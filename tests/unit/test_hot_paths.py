"""The hot-path helpers keep the exact output of what they replace."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from permitchain.errors import ContractError
from permitchain.models import GovernorPermit, canonical_json
from permitchain.runtime.audit import audit_fields

CONTEXTS: list[dict[str, Any]] = [
    {},
    {"a": 1, "é": "ü", "d": Decimal("1.50"), "nested": {"z": [1, "x", None]}, "f": 0.1},
    {"proposal": {"symbol": "BTCUSDT", "kill_score": "0.7"}, "entry_id": "1-0"},
]


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_audit_context_is_json_dumps(ctx: dict[str, Any]) -> None:
    got = audit_fields(plan_id="p", layer="l", decision="d", reason="r", context=ctx, ts=1.0)
    assert got["context"] == json.dumps(ctx, default=str, separators=(",", ":"))


@pytest.mark.parametrize("obj", [*CONTEXTS[:1], {"b": 1, "a": "é", "c": [True, None]}])
def test_canonical_json(obj: dict[str, Any]) -> None:
    assert canonical_json(obj) == json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_permit_parsed_once_with_its_object() -> None:
    raw = GovernorPermit(
        plan_id="0123456789abcdef", symbol="BTCUSDT", decision="GRANT", granted=True,
        reason="ok", mode="testnet", created_at=1.0, expires_at=2.0, sig="s",
    ).to_json()  # fmt: skip
    permit, obj = GovernorPermit.from_json_with_obj(raw)
    assert permit == GovernorPermit.from_json(raw) and obj == json.loads(raw)
    for bad, msg in (("{", "GovernorPermit: not JSON"),
                     ("[1]", "GovernorPermit: expected a JSON object")):  # fmt: skip
        with pytest.raises(ContractError, match=msg):
            GovernorPermit.from_json_with_obj(bad)
