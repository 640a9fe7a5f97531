"""Governor policy (P3.2): plan + trading state + snapshot + counts → grant or deny.

Pure: no Redis, no clock of its own (``now`` is passed in). The runner (``service.py``) reads
the inputs and the store (``store.py``) keeps the counts.

Always, in every mode, in this order: plan age (``plan_expired``), mode (``mode_mismatch``),
allowlist (``not_in_allowlist``), trading state (HALTED → ``trading_halted``; REDUCING lets
only reduce-only plans through (``trading_reducing``), and all our plans are reduce-only; an
unreadable or unknown state counts as HALTED), an input key of the wrong Redis type (the
snapshot, the rate windows, today's notional: ``wrong_key_type``, naming it). Then
``dry_run``/``testnet`` with
``TESTNET_AUTO_APPROVE`` grant (``testnet_auto_approve``); otherwise the production policy:
rate limits per symbol (``rate_limit_5min``, ``rate_limit_hour``), then, for risk-increasing
plans only, ``notional_cap`` and ``daily_notional_cap``; else ``policy_ok``. A close that
reduces risk is never blocked by a notional cap or by a high kill score.

An operator's emergency exit (``source=operator``, :mod:`permitchain.operator_exit`): after
plan age, mode and allowlist, granted ``operator_emergency_exit`` in every trading state and
past the rate limits when its request verifies (``GovernorInput.operator_problem == ""``),
else denied ``operator_signature_invalid``. Which check applies to which kind of exit:
:mod:`permitchain.exemptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from permitchain.contract.models import Plan
from permitchain.contract.reasons import (
    CANARY_DRY_RUN,
    DAILY_NOTIONAL_CAP,
    MODE_MISMATCH,
    NOT_IN_ALLOWLIST,
    NOTIONAL_CAP,
    OPERATOR_EMERGENCY_EXIT,
    OPERATOR_SIGNATURE_INVALID,
    PLAN_EXPIRED,
    POLICY_OK,
    RATE_LIMIT_5MIN,
    RATE_LIMIT_HOUR,
    TESTNET_AUTO_APPROVE,
    TRADING_HALTED,
    TRADING_REDUCING,
    WRONG_KEY_TYPE,
)
from permitchain.contract.trading_state import TradingState
from permitchain.operator_exit import is_operator_plan

if TYPE_CHECKING:
    from permitchain.contract.settings import Settings

REDUCE_ONLY_TYPES = frozenset({"market_reduce_only", "stop_market_reduce_only"})
AUTO_APPROVE_MODES = frozenset({"dry_run", "testnet"})


@dataclass(frozen=True, slots=True)
class GovernorPolicy:
    mode: str
    allow_list: frozenset[str]
    plan_max_age_s: float
    testnet_auto_approve: bool = True
    max_exec_per_hour: int = 3
    max_exec_per_5min: int = 2
    max_notional_per_trade: Decimal = Decimal(1000)
    daily_notional_cap: Decimal = Decimal(10000)

    @classmethod
    def from_settings(cls, s: Settings) -> GovernorPolicy:
        """The policy the settings describe (the governor's, and the replay's)."""
        return cls(
            mode=s.apply_mode.value,
            allow_list=s.allow_list,
            plan_max_age_s=s.plan_max_age_s,
            testnet_auto_approve=s.testnet_auto_approve,
            max_exec_per_hour=s.max_exec_per_hour,
            max_exec_per_5min=s.max_exec_per_5min,
            max_notional_per_trade=s.max_notional_per_trade,
            daily_notional_cap=s.daily_notional_cap,
        )

    @property
    def auto_approves(self) -> bool:
        return self.testnet_auto_approve and self.mode in AUTO_APPROVE_MODES


@dataclass(frozen=True, slots=True)
class GovernorInput:
    trading_state: TradingState
    position_amt: Decimal | None = None  # signed, from the P3.3 snapshot when known
    mark_price: Decimal | None = None
    step_size: Decimal | None = None
    exec_last_hour: int = 0  # confirmed executions + live reservations, this symbol
    exec_last_5min: int = 0
    notional_today: Decimal = Decimal(0)  # risk-increasing grants, this UTC day
    #: An operator plan's request as the runner verified it: "" verified, else what is
    #: wrong; None not checked (an operator plan is then denied).
    operator_problem: str | None = None
    #: input keys of the wrong Redis type, each as "key K is a T, expected a U"
    wrong_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GovernorDecision:
    granted: bool
    reason: str
    computed_qty: Decimal | None = None
    computed_notional: Decimal | None = None
    context: dict[str, Any] = field(default_factory=dict)


def is_reduce_only(plan: Plan) -> bool:
    """True when every step can only shrink the position (reduce-only close or stop).
    Every plan our planner emits is; a plan without steps is not (nothing to vouch for)."""
    return bool(plan.steps) and all(s.type in REDUCE_ONLY_TYPES for s in plan.steps)


def estimate(plan: Plan, inp: GovernorInput) -> tuple[Decimal | None, Decimal | None]:
    """computed_qty = |position| × close fraction (a stop move covers the whole position),
    rounded down to the step size when known; computed_notional = qty × mark price."""
    if inp.position_amt is None:
        return None, None
    qty = abs(inp.position_amt) * (plan.close_fraction or Decimal(1))
    if inp.step_size is not None and inp.step_size > 0:
        qty = (qty / inp.step_size).to_integral_value(rounding=ROUND_DOWN) * inp.step_size
    notional = qty * inp.mark_price if inp.mark_price is not None else None
    return qty, notional


def decide(plan: Plan, inp: GovernorInput, policy: GovernorPolicy, now: float) -> GovernorDecision:
    qty, notional = estimate(plan, inp)

    def deny(reason: str, **ctx: Any) -> GovernorDecision:
        return GovernorDecision(False, reason, qty, notional, ctx)

    expires = min(plan.expires_at, plan.created_at + policy.plan_max_age_s)
    if now > expires:
        return deny(
            PLAN_EXPIRED, age_s=round(now - plan.created_at, 3), max_age_s=policy.plan_max_age_s
        )
    if plan.is_canary:  # proof --canary: proves the allow path, ends dry_run at the executor
        if inp.trading_state is TradingState.HALTED:
            return deny(TRADING_HALTED)
        return GovernorDecision(True, CANARY_DRY_RUN, qty, notional)
    if plan.mode != policy.mode:
        return deny(MODE_MISMATCH, plan_mode=plan.mode, governor_mode=policy.mode)
    if plan.symbol not in policy.allow_list:
        return deny(NOT_IN_ALLOWLIST)
    if inp.wrong_types:
        return deny(WRONG_KEY_TYPE, keys=list(inp.wrong_types))
    if is_operator_plan(plan):  # an emergency exit: no trading state, no rate limits
        if inp.operator_problem != "":
            return deny(OPERATOR_SIGNATURE_INVALID, detail=inp.operator_problem or "not checked")
        return GovernorDecision(True, OPERATOR_EMERGENCY_EXIT, qty, notional)
    if inp.trading_state is TradingState.HALTED:
        return deny(TRADING_HALTED)
    if inp.trading_state is TradingState.REDUCING and not is_reduce_only(plan):
        return deny(TRADING_REDUCING)
    if policy.auto_approves:
        return GovernorDecision(True, TESTNET_AUTO_APPROVE, qty, notional)
    return production(plan, inp, policy, qty, notional)


def production(
    plan: Plan,
    inp: GovernorInput,
    policy: GovernorPolicy,
    qty: Decimal | None,
    notional: Decimal | None,
) -> GovernorDecision:
    """Rate limits per symbol on confirmed executions plus live reservations (the runner then
    reserves atomically, which may still refuse). Notional caps apply to risk-increasing
    plans only, and an unknown notional there denies."""

    def deny(reason: str, **ctx: Any) -> GovernorDecision:
        return GovernorDecision(False, reason, qty, notional, ctx)

    if inp.exec_last_5min >= policy.max_exec_per_5min:
        return deny(RATE_LIMIT_5MIN, count=inp.exec_last_5min, max=policy.max_exec_per_5min)
    if inp.exec_last_hour >= policy.max_exec_per_hour:
        return deny(RATE_LIMIT_HOUR, count=inp.exec_last_hour, max=policy.max_exec_per_hour)
    if not is_reduce_only(plan):
        if notional is None or notional > policy.max_notional_per_trade:
            return deny(NOTIONAL_CAP, max=str(policy.max_notional_per_trade))
        if inp.notional_today + notional > policy.daily_notional_cap:
            return deny(
                DAILY_NOTIONAL_CAP,
                today=str(inp.notional_today),
                cap=str(policy.daily_notional_cap),
            )
    return GovernorDecision(True, POLICY_OK, qty, notional)
