"""The six P3.3 checks (docs/design.md §5). Pure: data and clock in, decision out.

Before them, the plan itself: an unknown action (or ``HOLD``, which closes nothing) is refused
``unknown_action``; a plan whose ``close_fraction`` disagrees with its action is refused
``invalid_plan`` (the quantity always comes from the action, never from the plan's field); a plan
older than ``PLAN_MAX_AGE_S`` or past its ``expires_at`` is refused ``plan_expired``.

Then in order, the first that fails decides:

1. snapshot missing → ``no_exchange_snapshot``; older than ``STALE_THRESHOLD_S`` (or from the
   future by as much) → ``stale_exchange_state``
2. |position_amt| below the symbol's minimum quantity → ``no_position``
3. ledger side ≠ exchange side → ``reconcile_required_side_mismatch``
4. |exchange − ledger| > max(``POSITION_TOLERANCE``, ``QTY_TOLERANCE_PCT`` % of |exchange|) →
   ``reconcile_required_qty_mismatch``
5. last order less than ``COOLDOWN_S`` ago, or another plan's close still in flight →
   ``cooldown_in_flight``
6. safe_close_qty = min(fraction × |exchange|, |exchange|) rounded DOWN to the step; below the
   minimum quantity → ``below_min_qty``, except that closing the whole remaining position is
   always allowed. When what would remain is above zero but below the minimum quantity (no
   later tranche could close it), the plan closes the whole position instead. A close never
   takes more than the room the exchange leaves beside reduce-only orders already resting on
   the symbol (``resting_reduce_qty`` of the snapshot; Binance refuses more: -4118): with no
   room at or above the minimum quantity → ``resting_reduce_only``. (A stop, ``UPDATE_SL``,
   covers the whole position: untriggered stops do not count against it.)

An operator's verified emergency exit (``exempt_cooldown``) skips check 5 only: position truth
(checks 1-4) and the quantity (6) still decide.

Boundaries: "older than" and "more than" are strict (an age of exactly ``STALE_THRESHOLD_S``
and a diff of exactly the tolerance pass); the cooldown holds while less than ``COOLDOWN_S``
has passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from permitchain.contract.models import CANARY_SIZE, CLOSE_FRACTION, Action, fmt_decimal
from permitchain.contract.reasons import (
    BELOW_MIN_QTY,
    COOLDOWN_IN_FLIGHT,
    INVALID_PLAN,
    NO_EXCHANGE_SNAPSHOT,
    NO_POSITION,
    OK,
    PLAN_EXPIRED,
    QTY_MISMATCH,
    RESTING_REDUCE_ONLY,
    SIDE_MISMATCH,
    STALE_EXCHANGE_STATE,
    UNKNOWN_ACTION,
)
from permitchain.contract.snapshot import Ledger, Snapshot
from permitchain.exchange.base import round_down
from permitchain.exemptions import Check, ExitKind, applies

if TYPE_CHECKING:
    from permitchain.contract.settings import Settings


PosSide = Literal["LONG", "SHORT", "NONE"]

#: Share of the position each action closes. UPDATE_SL covers the whole position with its stop.
ACTION_FRACTION: dict[Action, Decimal] = {**CLOSE_FRACTION, Action.UPDATE_SL: Decimal(1)}


def side_of(amt: Decimal) -> PosSide:
    return "LONG" if amt > 0 else "SHORT" if amt < 0 else "NONE"


@dataclass(frozen=True, slots=True)
class PlanView:
    """What the checks need of a plan."""

    action: str
    created_at: float
    expires_at: float | None = None
    close_fraction: Decimal | None = None  # as the plan states it; checked against the action


@dataclass(frozen=True, slots=True)
class CheckConfig:
    stale_threshold_s: float = 10.0
    position_tolerance: Decimal = Decimal("0.001")
    qty_tolerance_pct: Decimal = Decimal(1)
    cooldown_s: float = 15.0
    plan_max_age_s: float = 30.0

    @classmethod
    def from_settings(cls, s: Settings) -> CheckConfig:
        """The checks' limits the settings describe (P3.3's, ``status``'s and the replay's)."""
        return cls(
            stale_threshold_s=s.stale_threshold_s,
            position_tolerance=s.position_tolerance,
            qty_tolerance_pct=s.qty_tolerance_pct,
            cooldown_s=s.cooldown_s,
            plan_max_age_s=s.plan_max_age_s,
        )


@dataclass(frozen=True, slots=True)
class P33Decision:
    allow: bool
    reason: str
    context: dict[str, Any] = field(default_factory=dict)
    safe_close_qty: Decimal | None = None
    side: PosSide | None = None  # the position's side (an allow closes it)
    snapshot_age_s: Decimal | None = None


def tolerance(exchange_amt: Decimal, cfg: CheckConfig) -> Decimal:
    return max(cfg.position_tolerance, abs(exchange_amt) * cfg.qty_tolerance_pct / 100)


def safe_close_qty(action: Action, position_amt: Decimal, step: Decimal) -> Decimal:
    """The quantity to close, rounded down to ``step``; never more than the position."""
    size = abs(position_amt)
    return round_down(min(ACTION_FRACTION[action] * size, size), step)


def _plan_refusal(plan: PlanView, cfg: CheckConfig, now: float) -> P33Decision | None:
    if plan.action not in Action.__members__ or Action(plan.action) not in ACTION_FRACTION:
        return P33Decision(False, UNKNOWN_ACTION, {"action": plan.action})
    act = Action(plan.action)
    expected = CLOSE_FRACTION.get(act, Decimal(0))
    if plan.close_fraction is not None and plan.close_fraction != expected:
        return P33Decision(
            False,
            INVALID_PLAN,
            {
                "action": plan.action,
                "close_fraction": fmt_decimal(plan.close_fraction),
                "expected_close_fraction": fmt_decimal(expected),
            },
        )
    age = now - plan.created_at
    if age > cfg.plan_max_age_s or (plan.expires_at is not None and now > plan.expires_at):
        return P33Decision(
            False, PLAN_EXPIRED, {"age_s": round(age, 3), "max_age_s": cfg.plan_max_age_s}
        )
    return None


def evaluate(
    *,
    plan: PlanView,
    snapshot: Snapshot | None,
    ledger: Ledger | None,
    cfg: CheckConfig,
    now: float,
    in_flight_plan: str | None = None,
    exempt_cooldown: bool = False,
) -> P33Decision:
    """Judge one plan. ``ledger`` None means "not yet initialised": the exchange amount stands
    in for it (the runner initialises it from the same snapshot). ``in_flight_plan``: another
    plan's close allowed for this symbol and not yet resolved. ``exempt_cooldown``: an
    operator's verified emergency exit (check 5 skipped)."""
    refused = _plan_refusal(plan, cfg, now)
    if refused is not None:
        return refused
    act = Action(plan.action)
    # 1. snapshot present and fresh
    if snapshot is None:
        return P33Decision(False, NO_EXCHANGE_SNAPSHOT)
    raw_age = now - snapshot.ts_epoch
    age = Decimal(str(round(max(0.0, raw_age), 3)))
    if abs(raw_age) > cfg.stale_threshold_s:
        return P33Decision(
            False,
            STALE_EXCHANGE_STATE,
            {
                "snapshot_age_sec": fmt_decimal(Decimal(str(round(raw_age, 3)))),
                "threshold_s": cfg.stale_threshold_s,
            },
            snapshot_age_s=age,
        )
    ex = snapshot.position_amt

    def deny(reason: str, ctx: dict[str, Any]) -> P33Decision:
        return P33Decision(False, reason, ctx, snapshot_age_s=age)

    # 2. a position to close
    if ex == 0 or abs(ex) < snapshot.min_qty:
        return deny(
            NO_POSITION, {"exchange_amt": fmt_decimal(ex), "min_qty": fmt_decimal(snapshot.min_qty)}
        )
    led = ledger.amt if ledger is not None else ex
    ctx: dict[str, Any] = {"exchange_amt": fmt_decimal(ex), "ledger_amt": fmt_decimal(led)}
    # 3. same side
    if side_of(led) != side_of(ex):
        return deny(
            SIDE_MISMATCH, {**ctx, "exchange_side": side_of(ex), "ledger_side": side_of(led)}
        )
    # 4. same size within tolerance
    diff, tol = abs(ex - led), tolerance(ex, cfg)
    if diff > tol:
        return deny(QTY_MISMATCH, {**ctx, "diff": fmt_decimal(diff), "tolerance": fmt_decimal(tol)})
    # 5. cooldown (not for an emergency exit): a recent order, or another plan's close in flight
    last = ledger.last_order_time_epoch if ledger is not None and not exempt_cooldown else None
    if last is not None and now - last < cfg.cooldown_s:
        return deny(
            COOLDOWN_IN_FLIGHT,
            {**ctx, "since_last_order_s": round(now - last, 3), "cooldown_s": cfg.cooldown_s},
        )
    if in_flight_plan is not None and not exempt_cooldown:
        return deny(
            COOLDOWN_IN_FLIGHT,
            {**ctx, "in_flight_plan": in_flight_plan, "cooldown_s": cfg.cooldown_s},
        )
    # 6. safe close quantity
    qty = safe_close_qty(act, ex, snapshot.step_size)
    size = abs(ex)
    room = size if act is Action.UPDATE_SL else max(Decimal(0), size - snapshot.resting_reduce_qty)
    whole = round_down(size, snapshot.step_size)
    if qty < whole and size - qty < snapshot.min_qty and room >= whole:
        qty = whole  # the last tranche: what would remain could never be closed on its own
    if qty > room:
        qty = round_down(room, snapshot.step_size)
        if qty <= 0 or qty < snapshot.min_qty:
            return deny(
                RESTING_REDUCE_ONLY,
                {
                    **ctx,
                    "safe_close_qty": fmt_decimal(qty),
                    "resting_reduce_qty": fmt_decimal(snapshot.resting_reduce_qty),
                    "min_qty": fmt_decimal(snapshot.min_qty),
                },
            )
    full = qty == size
    if qty <= 0 or (qty < snapshot.min_qty and not full):
        return deny(
            BELOW_MIN_QTY,
            {
                **ctx,
                "safe_close_qty": fmt_decimal(qty),
                "min_qty": fmt_decimal(snapshot.min_qty),
                "step_size": fmt_decimal(snapshot.step_size),
            },
        )
    return P33Decision(True, OK, {**ctx, "safe_close_qty": fmt_decimal(qty)}, qty, side_of(ex), age)


def canary_decision(close_fraction: Decimal | None) -> P33Decision:
    """``proof --canary``: a nominal allow without snapshot, ledger or claim (the plan is
    dry_run, so the executor ends it before any order)."""
    qty = round_down(CANARY_SIZE * (close_fraction or Decimal(1)), CANARY_SIZE / 1000)
    return P33Decision(
        True, OK, {"canary": True}, safe_close_qty=qty, side="LONG", snapshot_age_s=Decimal(0)
    )


def judge(
    kind: ExitKind,
    *,
    plan: PlanView,
    snapshot: Snapshot | None,
    ledger: Ledger | None,
    cfg: CheckConfig,
    now: float,
    in_flight_plan: str | None = None,
) -> P33Decision:
    """P3.3's decision for a kind of exit (:mod:`permitchain.exemptions`): the canary gets
    :func:`canary_decision`; every other kind the checks, the cooldown only where it applies
    (an emergency exit's request is verified by the runner before)."""
    if kind is ExitKind.CANARY:
        return canary_decision(plan.close_fraction)
    return evaluate(
        plan=plan,
        snapshot=snapshot,
        ledger=ledger,
        cfg=cfg,
        now=now,
        in_flight_plan=in_flight_plan,
        exempt_cooldown=not applies(kind, Check.COOLDOWN),
    )
