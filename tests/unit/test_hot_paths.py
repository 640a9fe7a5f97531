"""The hot-path helpers keep the exact output of what they replace."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from permitchain.errors import ContractError
from permitchain.models import GovernorPermit, canonical_json
from permitchain.runtime.audit import audit_fields
from permitchain.scripts import LeanScript, Scripts

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


def test_lean_scripts_run_and_reload_after_a_flush(arun: Any, r: Any, keys: Any) -> None:
    """A lean client's scripts run as one EVALSHA; after SCRIPT FLUSH (NOSCRIPT) the script is
    loaded and run again, once; inside a pipeline redis-py's script object runs it."""
    key = keys.exec_record("0123456789abcdef")

    async def body(ar: Any) -> list[Any]:
        s = Scripts(ar)
        assert isinstance(s.block_plan, LeanScript)
        args = ["why", "detail", "0123456789abcdef", "BTCUSDT", 60]
        out = [await s.block_plan(keys=[key], args=args)]
        await ar.script_flush()
        out.append(await s.block_plan(keys=[key], args=args))
        pipe = ar.pipeline(transaction=False)
        await s.block_plan(keys=[key], args=args, client=pipe)
        out += await pipe.execute()
        return out

    assert arun(body) == ["blocked", "blocked", "blocked"]
    assert r.hget(key, "reason") == "why"
