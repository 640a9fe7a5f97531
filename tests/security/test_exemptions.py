"""The exemption table (permitchain.exemptions, docs/design.md §13): one test per cell, each
against the pure decision functions (governor ``decide``, P3.3 ``judge``). A cell that says
"applies" must deny with the check's reason; one that says "no" must not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from permitchain.apply_layer.planner import steps_for
from permitchain.contract.models import CLOSE_FRACTION, Action, Plan, PlanDecision, make_plan_id
from permitchain.contract.settings import Settings
from permitchain.contract.signing import OPERATOR, Ed25519Signer, PublicKey, Verifier
from permitchain.contract.snapshot import Ledger, Snapshot
from permitchain.contract.trading_state import TradingState
from permitchain.exemptions import APPLIES, Check, ExitKind, applies, exit_kind, table
from permitchain.governor.policy import GovernorInput, GovernorPolicy, decide
from permitchain.operator_exit import flatten_plan, make_request, operator_problem
from permitchain.ops.canary import canary_plan
from permitchain.position_brain.checks import CheckConfig, PlanView, judge

T0 = 1_800_000_000.0
SYM = "BTCUSDT"
OPERATOR_KEY = Ed25519PrivateKey.generate()
VERIFIER = Verifier.of([PublicKey.of(OPERATOR, OPERATOR_KEY.public_key())])
#: The reason(s) each check denies with.
REASONS = {
    Check.TRADING_STATE: {"trading_halted"},
    Check.RATE_LIMITS: {"rate_limit_5min", "rate_limit_hour"},
    Check.NOTIONAL_CAPS: {"notional_cap", "daily_notional_cap"},
    Check.PLAN_AGE: {"plan_expired"},
    Check.SNAPSHOT_FRESHNESS: {"stale_exchange_state"},
    Check.SIDE_QUANTITY: {"reconcile_required_side_mismatch"},
    Check.COOLDOWN: {"cooldown_in_flight"},
    Check.MIN_QUANTITY: {"no_position", "below_min_qty"},
}


def exit_plan(source: str, now: float) -> Plan:
    action = Action.PARTIAL_50
    return Plan(
        plan_id=make_plan_id(SYM, action.value, 0, 1, source),
        symbol=SYM,
        action=action.value,
        decision=PlanDecision.EXECUTE,
        reason_codes=("plan_ok",),
        kill_score=Decimal("0.7"),
        close_fraction=CLOSE_FRACTION[action],
        steps=steps_for(action, None),
        mode="testnet",
        source=source,
        proposal_id="p1",
        proposal_ts=now,
        created_at=now,
        expires_at=now + 30,
    )


def plan_of(kind: ExitKind, now: float) -> Plan:
    if kind is ExitKind.EXIT_BRAIN:
        return exit_plan("exit-brain", now)
    if kind is ExitKind.PROPOSE:
        return exit_plan("cli", now)
    if kind is ExitKind.CANARY:
        return canary_plan(Settings(), "n0", now)
    req = make_request(
        symbol=SYM,
        reason="incident",
        operator="alice",
        mode="testnet",
        now=now,
        ttl_s=30,
        signer=Ed25519Signer.of(OPERATOR, OPERATOR_KEY),
    )
    return flatten_plan(req)


def governor(kind: ExitKind, plan: Plan, now: float, *, auto: bool = True, **inp: object) -> str:
    policy = GovernorPolicy(
        mode="testnet",
        allow_list=frozenset({SYM}),
        plan_max_age_s=30,
        testnet_auto_approve=auto,
        max_notional_per_trade=Decimal(0),
        daily_notional_cap=Decimal(0),
    )
    problem = operator_problem(plan, VERIFIER, now) if kind is ExitKind.FLATTEN else None
    base: dict[str, object] = {
        "trading_state": TradingState.ACTIVE,
        "operator_problem": problem,
        "position_amt": Decimal(1),
        "mark_price": Decimal(10**6),
    }
    d = decide(plan, GovernorInput(**{**base, **inp}), policy, now)  # type: ignore[arg-type]
    return "" if d.granted else d.reason


def p33(
    kind: ExitKind,
    plan: Plan,
    now: float,
    *,
    amt: str = "1",
    ledger: str = "1",
    snapshot_ts: float | None = None,
    last_order: float | None = None,
    in_flight: str | None = None,
) -> str:
    view = PlanView(
        action=plan.action,
        created_at=plan.created_at,
        expires_at=plan.expires_at,
        close_fraction=plan.close_fraction,
    )
    snap = Snapshot(
        position_amt=Decimal(amt),
        ts_epoch=now if snapshot_ts is None else snapshot_ts,
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
    )
    d = judge(
        kind,
        plan=view,
        snapshot=snap,
        ledger=Ledger(Decimal(ledger), last_order),
        cfg=CheckConfig(),
        now=now,
        in_flight_plan=in_flight,
    )
    return "" if d.allow else d.reason


def denial(kind: ExitKind, check: Check) -> str:
    """Make ``check`` fail for a plan of ``kind``; return the deny reason ('' = allowed)."""
    now = T0
    plan = plan_of(kind, now)
    if check is Check.TRADING_STATE:
        return governor(kind, plan, now, trading_state=TradingState.HALTED)
    if check is Check.RATE_LIMITS:
        return governor(kind, plan, now, auto=False, exec_last_5min=99, exec_last_hour=99)
    if check is Check.NOTIONAL_CAPS:  # caps of 0 and a notional of a million
        return governor(kind, plan, now, auto=False, notional_today=Decimal(10**9))
    if check is Check.PLAN_AGE:
        late = now + 31
        return governor(kind, plan, late) or p33(kind, plan, late)
    if check is Check.SNAPSHOT_FRESHNESS:
        return p33(kind, plan, now, snapshot_ts=now - 60)
    if check is Check.SIDE_QUANTITY:
        return p33(kind, plan, now, ledger="-1")
    if check is Check.COOLDOWN:
        return p33(kind, plan, now, last_order=now - 1) or p33(kind, plan, now, in_flight="0" * 16)
    return p33(kind, plan, now, amt="0.0005", ledger="0.0005")  # MIN_QUANTITY


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.name)
@pytest.mark.parametrize("check", list(Check), ids=lambda c: c.name)
def test_cell(kind: ExitKind, check: Check) -> None:
    reason = denial(kind, check)
    if applies(kind, check):
        assert reason in REASONS[check], f"{kind}: {check} should deny, got {reason!r}"
    else:
        assert reason == "", f"{kind}: exempt from {check}, but denied {reason!r}"


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.name)
def test_every_kind_passes_when_nothing_fails(kind: ExitKind) -> None:
    plan = plan_of(kind, T0)
    assert exit_kind(plan) is kind
    assert governor(kind, plan, T0) == "" and p33(kind, plan, T0) == ""


def test_an_unverified_emergency_exit_is_denied_by_both_gatekeepers() -> None:
    plan = plan_of(ExitKind.FLATTEN, T0)
    forged = plan.model_copy(update={"plan_id": "0" * 16})
    assert "not the one the request makes" in operator_problem(forged, VERIFIER, T0)
    assert governor(ExitKind.FLATTEN, forged, T0) == "operator_signature_invalid"
    stranger = Verifier.of([PublicKey.of(OPERATOR, Ed25519PrivateKey.generate().public_key())])
    assert operator_problem(plan, stranger, T0).startswith("operator signature: unknown kid")
    assert operator_problem(plan, VERIFIER, T0 + 31) == "operator request: expired"


def test_the_table_as_documented() -> None:
    assert table()[0] == ["trading state", "yes", "yes", "no", "yes"]
    assert len(table()) == len(Check) and set(APPLIES) == set(ExitKind)
