"""The six P3.3 checks (DESIGN.md §5). Pure: data and clock in, decision out.

In order, the first that fails decides:

1. snapshot missing → ``no_exchange_snapshot``; older than ``STALE_THRESHOLD_S`` →
   ``stale_exchange_state``
2. |position_amt| below the symbol's minimum quantity → ``no_position``
3. ledger side ≠ exchange side → ``reconcile_required_side_mismatch``
4. |exchange − ledger| > max(``POSITION_TOLERANCE``, ``QTY_TOLERANCE_PCT`` % of |exchange|) →
   ``reconcile_required_qty_mismatch``
5. last order (or last allow still in flight) less than ``COOLDOWN_S`` ago → ``cooldown_in_flight``
6. safe_close_qty = min(fraction × |exchange|, |exchange|) rounded DOWN to the step; below the
   minimum quantity → ``below_min_qty``, except that closing the whole remaining position is
   always allowed.

Before them: an unknown action is refused (``unknown_action``) and a plan older than
``PLAN_MAX_AGE_S`` is refused (``plan_expired``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from permitchain.exchange.base import round_down
from permitchain.models import CLOSE_FRACTION, Action, fmt_decimal

NO_EXCHANGE_SNAPSHOT = "no_exchange_snapshot"
STALE_EXCHANGE_STATE = "stale_exchange_state"
NO_POSITION = "no_position"
SIDE_MISMATCH = "reconcile_required_side_mismatch"
QTY_MISMATCH = "reconcile_required_qty_mismatch"
COOLDOWN_IN_FLIGHT = "cooldown_in_flight"
BELOW_MIN_QTY = "below_min_qty"
PLAN_EXPIRED = "plan_expired"
UNKNOWN_ACTION = "unknown_action"
OK = "ok"

PosSide = Literal["LONG", "SHORT", "NONE"]


def side_of(amt: Decimal) -> PosSide:
    return "LONG" if amt > 0 else "SHORT" if amt < 0 else "NONE"


@dataclass(frozen=True, slots=True)
class Snapshot:
    position_amt: Decimal  # signed
    ts_epoch: float
    step_size: Decimal
    min_qty: Decimal
    mark_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Ledger:
    amt: Decimal  # signed
    last_order_time_epoch: float | None = None


@dataclass(frozen=True, slots=True)
class CheckConfig:
    stale_threshold_s: float = 10.0
    position_tolerance: Decimal = Decimal("0.001")
    qty_tolerance_pct: Decimal = Decimal(1)
    cooldown_s: float = 15.0
    plan_max_age_s: float = 30.0


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
    """The quantity to close, rounded down to ``step``. UPDATE_SL covers the whole position."""
    size = abs(position_amt)
    fraction = CLOSE_FRACTION.get(action, Decimal(1))
    return round_down(min(fraction * size, size), step)


def evaluate(
    *, action: str, plan_created_at: float, snapshot: Snapshot | None, ledger: Ledger | None,
    cfg: CheckConfig, now: float,
) -> P33Decision:  # fmt: skip
    if action not in Action.__members__ or action == Action.HOLD:
        return P33Decision(False, UNKNOWN_ACTION, {"action": action})
    act = Action(action)
    if now - plan_created_at > cfg.plan_max_age_s:
        return P33Decision(False, PLAN_EXPIRED, {"age_s": round(now - plan_created_at, 3),
                                                "max_age_s": cfg.plan_max_age_s})  # fmt: skip
    # 1. snapshot present and fresh
    if snapshot is None:
        return P33Decision(False, NO_EXCHANGE_SNAPSHOT)
    age = Decimal(str(round(max(0.0, now - snapshot.ts_epoch), 3)))
    if now - snapshot.ts_epoch > cfg.stale_threshold_s:
        return P33Decision(False, STALE_EXCHANGE_STATE,
                           {"snapshot_age_sec": str(age),
                            "threshold_s": cfg.stale_threshold_s}, snapshot_age_s=age)  # fmt: skip
    ex = snapshot.position_amt
    # 2. a position to close
    if abs(ex) < snapshot.min_qty or ex == 0:
        return P33Decision(False, NO_POSITION, {"exchange_amt": fmt_decimal(ex),
                                               "min_qty": fmt_decimal(snapshot.min_qty)},
                           snapshot_age_s=age)  # fmt: skip
    led = ledger.amt if ledger is not None else ex
    ctx = {"exchange_amt": fmt_decimal(ex), "ledger_amt": fmt_decimal(led)}
    # 3. same side
    if side_of(led) != side_of(ex):
        return P33Decision(False, SIDE_MISMATCH, {**ctx, "exchange_side": side_of(ex),
                                                 "ledger_side": side_of(led)},
                           snapshot_age_s=age)  # fmt: skip
    # 4. same size within tolerance
    diff, tol = abs(ex - led), tolerance(ex, cfg)
    if diff > tol:
        return P33Decision(False, QTY_MISMATCH, {**ctx, "diff": fmt_decimal(diff),
                                                "tolerance": fmt_decimal(tol)},
                           snapshot_age_s=age)  # fmt: skip
    # 5. cooldown
    last = ledger.last_order_time_epoch if ledger is not None else None
    if last is not None and now - last < cfg.cooldown_s:
        return P33Decision(False, COOLDOWN_IN_FLIGHT,
                           {**ctx, "since_last_order_s": round(now - last, 3),
                            "cooldown_s": cfg.cooldown_s}, snapshot_age_s=age)  # fmt: skip
    # 6. safe close quantity
    qty = safe_close_qty(act, ex, snapshot.step_size)
    full = qty == abs(ex)
    if qty <= 0 or (qty < snapshot.min_qty and not full):
        return P33Decision(False, BELOW_MIN_QTY, {**ctx, "safe_close_qty": fmt_decimal(qty),
                                                 "min_qty": fmt_decimal(snapshot.min_qty),
                                                 "step_size": fmt_decimal(snapshot.step_size)},
                           snapshot_age_s=age)  # fmt: skip
    return P33Decision(True, OK, {**ctx, "safe_close_qty": fmt_decimal(qty)}, qty, side_of(ex), age)
