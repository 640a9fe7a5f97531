"""Planner logic: proposal → plan. Pure: data and clock in, plan out.

Order of rules (the first that applies decides a SKIP; every SKIP is published for audit):
a missing or malformed field (or a timestamp in the future) → ``invalid_proposal``;
unknown action → ``unknown_action`` and ``UPDATE_SL`` without a stop price →
``invalid_proposal`` (``models.proposal_fault``, which ``propose`` applies before sending);
symbol outside the allowlist → ``not_in_allowlist``; proposal older than
``PROPOSAL_TTL_S`` → ``proposal_expired``; ``HOLD`` → ``hold_action``; a plan for an external
executor (the gate) that closes nothing → ``external_not_a_close``; kill score below
``KILL_SCORE_THRESHOLD`` → ``below_kill_score_threshold``. Otherwise EXECUTE. Nothing is
guessed: every field the decision or the plan's identity is made of must be present
(``REQUIRED_FIELDS``; a missing ``position_epoch`` is never taken as 0), or the proposal is a
SKIP.

``plan_id`` comes from the decision's identity (symbol, action, position epoch, tranche),
never from a clock, so the same proposal twice is the same plan. A plan for an external
executor has ``external`` in its identity too: a bot's tranches never collide with the exit
brain's. A SKIP carries its reason
in the identity too, so a SKIP never shadows a later EXECUTE of the same tranche.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from permitchain.contract.errors import ContractError
from permitchain.contract.models import (
    CLOSE_FRACTION,
    CLOSE_STEP,
    EXECUTOR_EXTERNAL,
    Action,
    Plan,
    PlanDecision,
    Proposal,
    Step,
    make_plan_id,
    proposal_fault,
)
from permitchain.contract.reasons import (
    BELOW_THRESHOLD,
    EXTERNAL_NOT_A_CLOSE,
    HOLD_ACTION,
    INVALID_PROPOSAL,
    NOT_IN_ALLOWLIST,
    PLAN_OK,
    PROPOSAL_EXPIRED,
)
from permitchain.contract.settings import SYMBOL_RE

#: Fields the decision and the plan's identity are made of: a proposal must carry them all.
#: The kill-score components, ``new_sl``, ``r_net`` and ``source`` inform; absent means none.
REQUIRED_FIELDS = (
    "proposal_id",
    "symbol",
    "action",
    "kill_score",
    "position_epoch",
    "tranche",
    "ts_epoch",
)
MAX_FUTURE_S = 5.0  # clock skew tolerated on a proposal's ts_epoch


@dataclass(frozen=True, slots=True)
class PlannerPolicy:
    allow_list: frozenset[str]
    kill_score_threshold: Decimal
    proposal_ttl_s: float
    plan_max_age_s: float
    mode: str


#: Each closing action's market step, validated once here: a frozen model, the same for
#: every plan of that action (one per plan was a validation per plan).
CLOSE_STEPS: dict[Action, Step] = {
    action: Step(
        step=CLOSE_STEP[action], type="market_reduce_only", fraction=CLOSE_FRACTION[action]
    )
    for action in CLOSE_FRACTION
}


def steps_for(action: Action, new_sl: Decimal | None) -> tuple[Step, ...]:
    steps: list[Step] = []
    close = CLOSE_STEPS.get(action)
    if close is not None:
        steps.append(close)
    # A full close leaves nothing for a stop to protect.
    if new_sl is not None and new_sl > 0 and action is not Action.FULL_CLOSE_PROPOSED:
        steps.append(Step(step="UPDATE_SL", type="stop_market_reduce_only", price=new_sl))
    return tuple(steps)


def skip_reason(p: Proposal, policy: PlannerPolicy, now: float) -> str | None:
    if p.ts_epoch - now > MAX_FUTURE_S:
        return INVALID_PROPOSAL
    fault = proposal_fault(p.action, p.new_sl)
    if fault is not None:
        return fault[0]
    if p.symbol not in policy.allow_list:
        return NOT_IN_ALLOWLIST
    if now - p.ts_epoch > policy.proposal_ttl_s:
        return PROPOSAL_EXPIRED
    if p.action == Action.HOLD:
        return HOLD_ACTION
    if p.executor == EXECUTOR_EXTERNAL and Action(p.action) not in CLOSE_FRACTION:
        return EXTERNAL_NOT_A_CLOSE
    if p.kill_score < policy.kill_score_threshold:
        return BELOW_THRESHOLD
    return None


def make_plan(p: Proposal, policy: PlannerPolicy, now: float) -> Plan:
    reason = skip_reason(p, policy, now)
    known = p.action in Action.__members__
    action = Action(p.action) if known else None
    ident = (EXECUTOR_EXTERNAL,) if p.executor == EXECUTOR_EXTERNAL else ()
    if reason is None and action is not None:
        plan_id = make_plan_id(p.symbol, p.action, p.position_epoch, p.tranche, *ident)
        decision, codes = PlanDecision.EXECUTE, (PLAN_OK,)
        steps = steps_for(action, p.new_sl)
    else:
        plan_id = make_plan_id(
            p.symbol, p.action, p.position_epoch, p.tranche, *ident, "SKIP", str(reason)
        )
        decision, codes, steps = PlanDecision.SKIP, (str(reason),), ()
    # Built here from a validated proposal and the policy: constructed, not validated again
    # (tests/apply_layer/test_planner.py checks validation would give the same plan).
    return Plan.model_construct(
        plan_id=plan_id,
        symbol=p.symbol,
        action=p.action if known else "UNKNOWN",
        decision=decision,
        reason_codes=codes,
        kill_score=p.kill_score,
        close_fraction=CLOSE_FRACTION.get(action, Decimal(0)) if action else Decimal(0),
        new_sl=p.new_sl,
        steps=steps,
        mode=policy.mode,
        source=p.source,
        proposal_id=p.proposal_id,
        proposal_ts=p.ts_epoch,
        created_at=now,
        expires_at=now + policy.plan_max_age_s,
        executor=p.executor,
    )


def invalid_plan(
    symbol: str, fields: dict[str, str], error: str, policy: PlannerPolicy, now: float
) -> Plan:
    """SKIP plan for a proposal whose symbol is readable but whose other fields are not."""
    action, epoch, tranche = (
        fields.get(k, "")[:64] for k in ("action", "position_epoch", "tranche")
    )
    plan_id = make_plan_id(symbol, action, 0, 0, "SKIP", INVALID_PROPOSAL, epoch, tranche)
    return Plan(
        plan_id=plan_id,
        symbol=symbol,
        action="UNKNOWN",
        decision=PlanDecision.SKIP,
        reason_codes=(INVALID_PROPOSAL,),
        close_fraction=Decimal(0),
        mode=policy.mode,
        source=fields.get("source", "")[:64],
        proposal_id=fields.get("proposal_id", "")[:64],
        proposal_ts=now,
        created_at=now,
        expires_at=now + policy.plan_max_age_s,
    )


def plan_from_fields(fields: dict[str, str], policy: PlannerPolicy, now: float) -> tuple[Plan, str]:
    """A proposal's stream entry or hash → (plan, what was wrong with it or '').
    Raises ContractError only when not even the symbol is readable (dead letter)."""
    try:
        missing = [f for f in REQUIRED_FIELDS if f not in fields]
        if missing:
            raise ContractError(f"missing field(s): {', '.join(missing)}")
        return make_plan(Proposal.from_fields(fields), policy, now), ""
    except ContractError as e:
        symbol = fields.get("symbol", "")
        if not SYMBOL_RE.match(symbol):
            raise
        return invalid_plan(symbol, fields, str(e), policy, now), str(e)
