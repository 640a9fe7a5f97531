"""Plans for the governor's tests: real ``Plan`` objects as the planner makes them."""

from __future__ import annotations

from decimal import Decimal

from permitchain.apply_layer.planner import steps_for
from permitchain.contract.models import (
    CLOSE_FRACTION,
    Action,
    Plan,
    PlanDecision,
    Step,
    make_plan_id,
)

T0 = 1_800_000_000.0  # a fixed "now" for the injected clock


def plan(
    action: Action = Action.PARTIAL_75,
    *,
    symbol: str = "BTCUSDT",
    mode: str = "production",
    created_at: float = T0,
    tranche: int = 0,
    max_age_s: float = 30,
) -> Plan:
    return Plan(
        plan_id=make_plan_id(symbol, action.value, 0, tranche),
        symbol=symbol,
        action=action.value,
        decision=PlanDecision.EXECUTE,
        reason_codes=("plan_ok",),
        kill_score=Decimal("0.539"),
        close_fraction=CLOSE_FRACTION.get(action, Decimal(0)),
        new_sl=Decimal("100.2"),
        steps=steps_for(action, Decimal("100.2")),
        mode=mode,
        source="test",
        proposal_id="p1",
        proposal_ts=created_at,
        created_at=created_at,
        expires_at=created_at + max_age_s,
    )


def risk_increasing(p: Plan) -> Plan:
    """A plan with a step that is not reduce-only. The contract's ``Step`` type cannot carry
    one today (``model_construct`` skips validation on purpose): the policy must still treat
    such a plan as risk-increasing, should a future planner emit one."""
    opening = Step.model_construct(step="OPEN", type="market", fraction=Decimal(1))
    return p.model_copy(update={"steps": (opening,)})
