"""Exit kernel: pure functions from components and position to an exit decision.

kill_score = sigmoid(w_regime·regime + w_sigma·sigma + w_ts·ts_drop + w_age·age), default
weights 1.0, 0.5, 0.5, 0.3. Every component is ≥ 0, so the score is ≥ 0.5 whenever no
component fires (sigmoid(0) = 0.5): a threshold of 0.5 therefore lets every proposal through
and gates nothing; a threshold above 0.5 requires some evidence of a deteriorating trade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from permitchain.models import Action

FOUR = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class Components:
    regime_flip: float = 0.0
    sigma_spike: float = 0.0
    ts_drop: float = 0.0
    age_penalty: float = 0.0


@dataclass(frozen=True, slots=True)
class Weights:
    regime: float = 1.0
    sigma: float = 0.5
    ts: float = 0.5
    age: float = 0.3


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def kill_score(c: Components, w: Weights = Weights()) -> Decimal:
    """The kill score, rounded to 4 places (0.5390 for DESIGN.md §8's components)."""
    x = (
        w.regime * c.regime_flip
        + w.sigma * c.sigma_spike
        + w.ts * c.ts_drop
        + w.age * c.age_penalty
    )
    return Decimal(str(sigmoid(x))).quantize(FOUR, rounding=ROUND_HALF_EVEN)


#: R_net levels of the harvest tranches, highest first.
TRANCHES: tuple[tuple[Decimal, Action, int], ...] = (
    (Decimal(6), Action.PARTIAL_75, 3),
    (Decimal(4), Action.PARTIAL_50, 2),
    (Decimal(2), Action.PARTIAL_25, 1),
)
BREAK_EVEN_R = Decimal("1.5")
BREAK_EVEN_BUFFER = Decimal("0.002")


def harvest_action(r_net: Decimal, tranches_done: int) -> tuple[Action, int] | None:
    """The highest tranche R_net reaches that was not yet proposed for this position."""
    for level, action, n in TRANCHES:
        if r_net >= level and n > tranches_done:
            return action, n
    return None


def break_even_stop(entry: Decimal, is_long: bool) -> Decimal:
    """Break-even plus 0.2 % in the trade's favour: 100 → 100.2 for a long, 99.8 for a short."""
    return entry * (1 + BREAK_EVEN_BUFFER) if is_long else entry * (1 - BREAK_EVEN_BUFFER)
