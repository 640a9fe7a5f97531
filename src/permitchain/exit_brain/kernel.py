"""Exit kernel: pure functions from components, position and bookkeeping to an exit decision.

No Redis, no clock of its own, no I/O. Prices, R and stops are ``Decimal``; the components
are ``float`` (they come from statistics over returns, see :mod:`.market`).

**Kill score.** ``kill_score = sigmoid(w_regime·regime + w_sigma·sigma + w_ts·ts_drop +
w_age·age)``, default weights 1.0, 0.5, 0.5, 0.3, over four components:

* regime flip ∈ {0, 1}: 1 when the trend probability is < 0.3 and chop + mean reversion > 0.5;
* sigma spike = clamp(σ/σ_ref − 1, 0, 2);
* time-series drop = clamp(0.3 − trend strength, 0, 0.5);
* age penalty = clamp(age_s / 86400, 0, 1).

Every component is ≥ 0, so the score is ≥ 0.5 whenever no component fires (sigmoid(0) = 0.5)
and at most sigmoid(2.55) ≈ 0.9276. The planner's ``KILL_SCORE_THRESHOLD`` (0.5) is the
minimum score a proposal needs to become an EXECUTE plan: at 0.5 it lets every proposal of
this kernel through (it gates only hand-made proposals with lower scores); above 0.5 it
demands evidence of a deteriorating trade even for profit harvests. ``FULL_CLOSE_SCORE``
(setting default 0.78, calibrated with the replay; :class:`ExitParams` keeps 0.6 as the
kernel's neutral default for tests) is this kernel's own line between "close everything"
and "harvest by R".

The score is computed from the components rounded to 4 places, the values the proposal
carries, so anyone can recompute it from the proposal: (0, 0.1084, 0.1789, 0.0417) → 0.5390.

**R_net** (:func:`r_net`), in units of the initial risk:
``((mark − entry)·dir − fee_rate·(entry + mark)) / (entry·risk_fraction)``, dir = +1 long,
−1 short: unrealised PnL per unit minus round-trip fees per unit, over the initial risk per
unit. Truncated toward zero to 4 places; decisions use that reported value.

**Decision** (:func:`decide`), first match wins:

0. a proposal still waiting for its outcome, or a retry pause after one the chain did not
   execute → HOLD;
1. kill score ≥ ``full_close_score`` → ``FULL_CLOSE_PROPOSED`` (another executed attempt
   only after ``full_close_retry_s``, at most ``max_full_close_attempts`` per epoch);
2. R_net reaches a harvest level not yet executed for this position epoch: 2 → PARTIAL_25
   (level 1), 4 → PARTIAL_50 (2), 6 → PARTIAL_75 (3) (``tranche_r``); the highest level
   reached wins and the lower ones are spent with it. A stop move (below) rides along as
   ``new_sl``;
3. R_net ≥ ``break_even_r`` (1.5) and break-even + ``break_even_offset`` (0.2 %) tightens the
   current stop → ``UPDATE_SL``; with a trailing distance (``trail_r`` > 0,
   ``EXIT_TRAIL_R``), once in profit the stop also trails the mark by that many R (1 R =
   entry × risk fraction), rounded to the tick away from the mark: the tighter of the two
   is proposed when it tightens the current stop by at least ``trail_step_r`` R (so a
   trailing stop makes one plan per step, not one per tick);
4. otherwise HOLD: nothing is written.

**Only what the chain executed counts.** A proposal makes the book *pending*
(:func:`pending`); :func:`settle` applies it when the chain executed the plan (a harvest
level spent, a stop moved, a full-close attempt counted) or, when it did not (denied,
blocked, rejected, expired), leaves everything available again after ``retry_s``.

The ``tranche`` of every proposal is its number in the position epoch (1, 2, 3, …; retries
included), and the planner derives ``plan_id`` from (symbol, action, position epoch,
tranche): each proposal is its own plan, a re-proposal after a crash (same number, the book
not yet saved) is the same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from permitchain.contract.models import Action

FOUR = Decimal("0.0001")
SECONDS_PER_DAY = 86400.0
TREND_FLIP_BELOW = 0.3  # trend probability under which the regime counts as flipped
CHOP_MR_ABOVE = 0.5  # chop + mean-reversion probability above which it counts as flipped
TS_LEVEL = 0.3  # trend strength under which the time-series drop starts to count


def clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def to4(x: float) -> Decimal:
    """A float component as the 4-place decimal the proposal carries."""
    return Decimal(repr(float(x))).quantize(FOUR, rounding=ROUND_HALF_EVEN)


# ---------------------------------------------------------------------------------------
# Components and kill score
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Components:
    regime_flip: float = 0.0
    sigma_spike: float = 0.0
    ts_drop: float = 0.0
    age_penalty: float = 0.0

    def rounded(self) -> Components:
        """The components as reported: each rounded half-even to 4 places."""
        return Components(*(float(to4(v)) for v in self.as_tuple()))

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.regime_flip, self.sigma_spike, self.ts_drop, self.age_penalty)


@dataclass(frozen=True, slots=True)
class Weights:
    regime: float = 1.0
    sigma: float = 0.5
    ts: float = 0.5
    age: float = 0.3


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def regime_flip(trend: float, chop: float, mean_reversion: float) -> int:
    """1 when the trend probability is < 0.3 and chop + mean reversion > 0.5, else 0."""
    return int(trend < TREND_FLIP_BELOW and chop + mean_reversion > CHOP_MR_ABOVE)


def sigma_spike(sigma: float, sigma_ref: float) -> float:
    """clamp(σ/σ_ref − 1, 0, 2); 0 without a positive reference."""
    if sigma_ref <= 0 or not math.isfinite(sigma / sigma_ref):
        return 0.0
    return clamp(sigma / sigma_ref - 1.0, 0.0, 2.0)


def ts_drop(trend_strength: float) -> float:
    """clamp(0.3 − trend strength, 0, 0.5); trend strength in [−1, 1], > 0 in the trade's
    favour."""
    return clamp(TS_LEVEL - trend_strength, 0.0, 0.5)


def age_penalty(age_s: float) -> float:
    """clamp(age / 1 day, 0, 1)."""
    return clamp(age_s / SECONDS_PER_DAY, 0.0, 1.0)


def kill_score(c: Components, w: Weights = Weights()) -> Decimal:
    """The kill score of the components as given, rounded half-even to 4 places."""
    x = (
        w.regime * c.regime_flip
        + w.sigma * c.sigma_spike
        + w.ts * c.ts_drop
        + w.age * c.age_penalty
    )
    return Decimal(repr(sigmoid(x))).quantize(FOUR, rounding=ROUND_HALF_EVEN)


# ---------------------------------------------------------------------------------------
# R_net and stops
# ---------------------------------------------------------------------------------------
def r_net(
    entry: Decimal, mark: Decimal, is_long: bool, risk_fraction: Decimal, fee_rate: Decimal
) -> Decimal:
    """Net R: (PnL per unit − round-trip fees per unit) / (entry × risk_fraction).

    All terms are quote currency per unit of the base asset. Truncated toward zero to 4
    places, so a reported 2.0000 really is ≥ 2.
    """
    if entry <= 0 or mark <= 0 or risk_fraction <= 0:
        raise ValueError(f"r_net needs positive prices and risk (entry={entry}, mark={mark})")
    pnl = (mark - entry) if is_long else (entry - mark)
    fees = fee_rate * (entry + mark)
    return ((pnl - fees) / (entry * risk_fraction)).quantize(FOUR, rounding=ROUND_DOWN)


#: R_net levels of the harvest tranches, in order: PARTIAL_25, PARTIAL_50, PARTIAL_75.
TRANCHE_ACTIONS = (Action.PARTIAL_25, Action.PARTIAL_50, Action.PARTIAL_75)
TRANCHE_R = (Decimal(2), Decimal(4), Decimal(6))
BREAK_EVEN_R = Decimal("1.5")
BREAK_EVEN_BUFFER = Decimal("0.002")


def harvest_action(
    r: Decimal, tranches_done: int, levels: tuple[Decimal, ...] = TRANCHE_R
) -> tuple[Action, int] | None:
    """The highest tranche level R_net reaches that was not yet executed for this position:
    (action, level number 1–3)."""
    for n in range(len(levels), 0, -1):
        if r >= levels[n - 1] and n > tranches_done:
            return TRANCHE_ACTIONS[n - 1], n
    return None


def to_tick(price: Decimal, tick: Decimal | None, *, up: bool) -> Decimal:
    """Round a price to the tick, up or down (never to nearest: the caller says which side)."""
    if tick is None or tick <= 0:
        return price
    steps = (price / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return steps * tick


def break_even_stop(
    entry: Decimal, is_long: bool, tick: Decimal | None = None, offset: Decimal = BREAK_EVEN_BUFFER
) -> Decimal:
    """Break-even plus the offset (0.2 %) in the trade's favour: 100 → 100.2 for a long, 99.8
    for a short. Rounded to the tick away from entry, so at least the offset stays locked in."""
    if is_long:
        return to_tick(entry * (1 + offset), tick, up=True)
    return to_tick(entry * (1 - offset), tick, up=False)


def initial_stop(entry: Decimal, is_long: bool, risk_fraction: Decimal) -> Decimal:
    """The stop 1 R away from entry, assumed when no stop of ours is known."""
    return entry * (1 - risk_fraction) if is_long else entry * (1 + risk_fraction)


def tightens(candidate: Decimal, current: Decimal | None, is_long: bool) -> bool:
    """A long's stop only moves up, a short's only down."""
    if current is None:
        return True
    return candidate > current if is_long else candidate < current


# ---------------------------------------------------------------------------------------
# Decision
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExitParams:
    weights: Weights = Weights()
    full_close_score: Decimal = Decimal("0.6")
    risk_fraction: Decimal = Decimal("0.01")
    fee_rate: Decimal = Decimal("0.0004")
    full_close_retry_s: float = 60.0
    max_full_close_attempts: int = 3
    tranche_r: tuple[Decimal, ...] = TRANCHE_R
    break_even_r: Decimal = BREAK_EVEN_R
    break_even_offset: Decimal = BREAK_EVEN_BUFFER
    retry_s: float = 30.0  # pause after a proposal the chain did not execute
    trail_r: Decimal = Decimal(0)  # trailing distance in R once in profit (0: no trailing)
    trail_step_r: Decimal = Decimal("0.5")  # least move of a stop, in R


@dataclass(frozen=True, slots=True)
class PositionView:
    """What the kernel needs of a position: entry, mark, direction and the price tick."""

    entry: Decimal
    mark: Decimal
    is_long: bool
    tick: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Book:
    """What the chain executed for one position epoch, and the proposal awaiting its outcome
    (kept in Redis by the runner, in memory by the replay)."""

    epoch: int = 0
    tranches_done: int = 0  # highest harvest level executed (0 = none)
    stop: Decimal | None = None  # tightest stop executed
    sl_moves: int = 0
    full_close_attempts: int = 0  # full closes executed
    last_full_close_ts: float = 0.0
    proposals: int = 0  # proposals made in this epoch (the last one's tranche)
    pending_action: str = ""  # the proposal awaiting its outcome ("" = none)
    pending_level: int = 0  # its harvest level (PARTIAL_*), else 0
    pending_sl: Decimal | None = None  # its stop (UPDATE_SL, or riding along a harvest)
    pending_since: float = 0.0
    retry_at: float = 0.0  # no proposal before this time (after one not executed)

    @property
    def pending(self) -> bool:
        return self.pending_action != ""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    tranche: int
    new_sl: Decimal | None
    kill_score: Decimal
    components: Components  # as reported (rounded)
    r_net: Decimal
    book: Book  # the bookkeeping after this decision (unchanged for HOLD)

    @property
    def proposes(self) -> bool:
        return self.action is not Action.HOLD


def trailing_stop(pos: PositionView, p: ExitParams) -> Decimal:
    """``trail_r`` R behind the mark, rounded to the tick away from it."""
    unit = pos.entry * p.risk_fraction
    if pos.is_long:
        return to_tick(pos.mark - p.trail_r * unit, pos.tick, up=False)
    return to_tick(pos.mark + p.trail_r * unit, pos.tick, up=True)


def stop_move(pos: PositionView, r: Decimal, book: Book, p: ExitParams) -> Decimal | None:
    """Break-even + offset once R_net ≥ ``break_even_r``, and (``trail_r`` > 0) once in profit
    a stop ``trail_r`` R behind the mark; the tighter one, only if it tightens the current stop
    (ours, or the initial 1 R stop) by at least ``trail_step_r`` R when trailing, and stays on
    the protective side of the mark."""
    candidates = []
    if r >= p.break_even_r:
        candidates.append(break_even_stop(pos.entry, pos.is_long, pos.tick, p.break_even_offset))
    trailing = p.trail_r > 0 and r > 0
    if trailing:
        candidates.append(trailing_stop(pos, p))
    if not candidates:
        return None
    candidate = max(candidates) if pos.is_long else min(candidates)
    current = (
        book.stop
        if book.stop is not None
        else initial_stop(pos.entry, pos.is_long, p.risk_fraction)
    )
    protective = candidate < pos.mark if pos.is_long else candidate > pos.mark
    if not (protective and tightens(candidate, current, pos.is_long)):
        return None
    if trailing and abs(candidate - current) < p.trail_step_r * pos.entry * p.risk_fraction:
        return None
    return candidate


def pending(book: Book, action: Action, level: int, sl: Decimal | None, now: float) -> Book:
    """The book after proposing: one more proposal, this one awaiting its outcome."""
    return replace(
        book,
        proposals=book.proposals + 1,
        pending_action=action.value,
        pending_level=level,
        pending_sl=sl,
        pending_since=now,
    )


def settle(book: Book, executed: bool, now: float, p: ExitParams) -> Book:
    """The book once the pending proposal's outcome is known. Executed: the harvest level is
    spent, the stop moved, the full-close attempt counted. Not executed (denied, blocked,
    rejected, expired): all stays available, after a pause of ``retry_s``."""
    if not book.pending:
        return book
    done = replace(book, pending_action="", pending_level=0, pending_sl=None, pending_since=0.0)
    if not executed:
        return replace(done, retry_at=now + p.retry_s)
    action = Action(book.pending_action)
    if action is Action.FULL_CLOSE_PROPOSED:
        return replace(
            done, full_close_attempts=book.full_close_attempts + 1, last_full_close_ts=now
        )
    stop = book.pending_sl if book.pending_sl is not None else book.stop
    if action is Action.UPDATE_SL:
        return replace(done, stop=stop, sl_moves=book.sl_moves + 1)
    return replace(done, tranches_done=max(book.tranches_done, book.pending_level), stop=stop)


def decide(
    pos: PositionView, components: Components, book: Book, p: ExitParams, now: float
) -> Decision:
    """The exit decision for one position (see the module docstring for the rules)."""
    comps = components.rounded()
    score = kill_score(comps, p.weights)
    r = r_net(pos.entry, pos.mark, pos.is_long, p.risk_fraction, p.fee_rate)

    def out(action: Action, level: int = 0, sl: Decimal | None = None) -> Decision:
        if action is Action.HOLD:
            return Decision(action, 0, None, score, comps, r, book)
        return Decision(
            action, book.proposals + 1, sl, score, comps, r, pending(book, action, level, sl, now)
        )

    if book.pending or now < book.retry_at:
        return out(Action.HOLD)
    if score >= p.full_close_score:
        n = book.full_close_attempts
        due = n == 0 or now - book.last_full_close_ts >= p.full_close_retry_s
        if n < p.max_full_close_attempts and due:
            return out(Action.FULL_CLOSE_PROPOSED)
        return out(Action.HOLD)
    sl = stop_move(pos, r, book, p)
    harvest = harvest_action(r, book.tranches_done, p.tranche_r)
    if harvest is not None:
        action, n = harvest
        return out(action, n, sl)
    if sl is not None:
        return out(Action.UPDATE_SL, 0, sl)
    return out(Action.HOLD)
