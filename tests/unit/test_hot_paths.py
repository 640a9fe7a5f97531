"""The hot-path helpers keep the exact output of what they replace."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest

from permitchain.contract.errors import ContractError
from permitchain.contract.models import GovernorPermit, Plan, canonical_json
from permitchain.exchange.sim import _filters, _filters_of
from permitchain.runtime.audit import audit_fields
from permitchain.store.scripts import LeanScript, Scripts

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
        plan_id="0123456789abcdef",
        symbol="BTCUSDT",
        decision="GRANT",
        granted=True,
        reason="ok",
        mode="testnet",
        created_at=1.0,
        expires_at=2.0,
        sig="s",
    ).to_json()
    permit, obj = GovernorPermit.from_json_with_obj(raw)
    assert permit == GovernorPermit.from_json(raw) and obj == json.loads(raw)
    for bad, msg in (
        ("{", "GovernorPermit: not JSON"),
        ("[1]", "GovernorPermit: expected a JSON object"),
    ):
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


def _plan_fields(**over: str) -> dict[str, str]:
    base = {
        "schema": "1",
        "plan_id": "0123456789abcdef",
        "symbol": "BTCUSDT",
        "action": "PARTIAL_25",
        "decision": "EXECUTE",
        "reason_codes": "plan_ok",
        "kill_score": "0.7",
        "close_fraction": "0.25",
        "new_sl": "",
        "steps": "[]",
        "mode": "testnet",
        "source": "t",
        "proposal_id": "p",
        "proposal_ts": "1.0",
        "created_at": "1.0",
        "expires_at": "2.0",
    }
    return {**base, **over}


@pytest.mark.parametrize(
    ("raw", "codes"), [("plan_ok", ("plan_ok",)), ("a,,b,", ("a", "b")), ("", ()), (",", ())]
)
def test_reason_codes_are_the_non_empty_items(raw: str, codes: tuple[str, ...]) -> None:
    assert Plan.from_fields(_plan_fields(reason_codes=raw)).reason_codes == codes


def test_reason_codes_not_a_list_are_refused() -> None:
    data: dict[str, Any] = {**_plan_fields(), "reason_codes": 7}
    del data["schema"]
    with pytest.raises(ContractError) as e:
        Plan._validate(data)
    assert str(e.value) == "Plan reason_codes: expected a comma list"


def test_sim_filters_parsed_once_per_hash_and_bad_ones_refused() -> None:
    h = {
        "step_size": "0.001",
        "min_qty": "0.001",
        "max_qty": "1000",
        "min_notional": "5",
        "tick_size": "0.1",
    }
    f = _filters_of("BTCUSDT", tuple(h.items()))
    assert f == _filters("BTCUSDT", h) and f is _filters_of("BTCUSDT", tuple(h.items()))
    changed = {**h, "step_size": "0.01"}
    assert _filters_of("BTCUSDT", tuple(changed.items())).step_size == Decimal("0.01")
    bad = {**h, "min_qty": "x"}
    for _ in range(2):  # a failure is not remembered: raised every time, as before
        with pytest.raises(InvalidOperation):
            _filters_of("BTCUSDT", tuple(bad.items()))
