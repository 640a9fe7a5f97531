"""Which check applies to which kind of exit: the table of docs/design.md §13 ("Public-key
permits", exemption table), as data. ``tests/security/test_exemptions.py`` holds one test per
cell against the pure decision functions (governor ``policy.decide``, P3.3 ``checks.evaluate``).

Kinds: a plan from the exit brain, one from ``permitchain propose`` (both go through the
planner and are judged alike), an operator's emergency exit (``permitchain flatten``, signed
request verified), and ``proof --canary``'s dry-run probe.

Notional caps apply to risk-increasing plans only; every exit is reduce-only, so no exit is
ever capped. Min quantity for an emergency exit: it closes the whole position, which is
always allowed unless the position itself is below the exchange's minimum (``no_position``).
"""

from __future__ import annotations

from enum import StrEnum

from permitchain.contract.models import Plan
from permitchain.operator_exit import is_operator_plan


class ExitKind(StrEnum):
    EXIT_BRAIN = "exit-brain plan"
    PROPOSE = "propose"
    FLATTEN = "emergency flatten"
    CANARY = "canary"


class Check(StrEnum):
    TRADING_STATE = "trading state"
    RATE_LIMITS = "rate limits"
    NOTIONAL_CAPS = "notional caps"
    PLAN_AGE = "plan age"
    SNAPSHOT_FRESHNESS = "snapshot freshness"
    SIDE_QUANTITY = "side/quantity"
    COOLDOWN = "cooldown"
    MIN_QUANTITY = "min quantity"


_ALL = frozenset(Check) - {Check.NOTIONAL_CAPS}
APPLIES: dict[ExitKind, frozenset[Check]] = {
    ExitKind.EXIT_BRAIN: _ALL,
    ExitKind.PROPOSE: _ALL,
    ExitKind.FLATTEN: frozenset(
        {Check.PLAN_AGE, Check.SNAPSHOT_FRESHNESS, Check.SIDE_QUANTITY, Check.MIN_QUANTITY}
    ),
    # HALTED denies a canary (REDUCING does not: it is reduce-only and dry-run)
    ExitKind.CANARY: frozenset({Check.TRADING_STATE, Check.PLAN_AGE}),
}


def applies(kind: ExitKind, check: Check) -> bool:
    return check in APPLIES[kind]


def exit_kind(plan: Plan) -> ExitKind:
    if plan.is_canary:
        return ExitKind.CANARY
    if is_operator_plan(plan):
        return ExitKind.FLATTEN
    if plan.source == "exit-brain":
        return ExitKind.EXIT_BRAIN
    return ExitKind.PROPOSE


def table() -> list[list[str]]:
    """The table as rows of text: check, then yes/no per kind (for docs and `--json`)."""
    return [[c.value, *("yes" if applies(k, c) else "no" for k in ExitKind)] for c in Check]
