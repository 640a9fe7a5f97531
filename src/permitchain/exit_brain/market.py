"""Market estimators: recent mark prices → the kill-score components. Pure, ``float`` maths.

Input is the series of marks the exit brain sampled, one per cycle (equally spaced), turned
into log returns r_t = ln(p_t / p_{t−1}). Windows: the last ``SHORT_WINDOW`` returns for the
current σ, the regime and the trend; the last ``REF_WINDOW`` for the reference σ_ref.

**Regime estimate** (:func:`regime_estimate`) over the short window of n returns, as three
probabilities that sum to 1:

* trend = 2Φ(|z|) − 1 with z = mean / (s/√n), the t-statistic of the mean return: the
  confidence that the window drifts at all. For a driftless random walk it is uniform on
  [0, 1]; a steady trend pushes it towards 1.
* mean reversion = (1 − trend)·Φ(−ρ₁√n), with ρ₁ the lag-1 autocorrelation of the returns
  (≈ N(0, 1/n) for a random walk): the rest of the mass, in the share that the returns tend
  to undo each other.
* chop = (1 − trend)·(1 − Φ(−ρ₁√n)): the remainder, noise without direction.

The regime flip rule (trend < 0.3 and chop + mean reversion > 0.5) is applied as stated;
with this estimator the second clause follows from the first, and it stays in the rule for
estimators whose probabilities keep some mass unassigned.

**Trend strength** = trend probability signed by the drift relative to the position: +trend
when the window drifts in the trade's favour, −trend when against, in [−1, 1].

A component without enough data is 0 (no evidence), never a guess: fewer than
``MIN_RETURNS`` returns → no regime, no trend, no σ; fewer than ``MIN_REF_RETURNS`` → no σ_ref.
A window without any movement gives no regime either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from statistics import fmean, stdev

from permitchain.exit_brain.kernel import (
    Components,
    age_penalty,
    regime_flip,
    sigma_spike,
    ts_drop,
)

SHORT_WINDOW = 20
REF_WINDOW = 120
MIN_RETURNS = 10
MIN_REF_RETURNS = 40


def phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def log_returns(prices: Sequence[Decimal]) -> list[float]:
    """ln(p_t / p_{t−1}) for consecutive positive prices."""
    out = []
    for prev, cur in pairwise(prices):
        if prev <= 0 or cur <= 0:
            raise ValueError(f"log_returns needs positive prices, got {prev}, {cur}")
        out.append(math.log(float(cur) / float(prev)))
    return out


@dataclass(frozen=True, slots=True)
class Regime:
    trend: float
    chop: float
    mean_reversion: float
    drift: int  # sign of the mean return: +1 up, −1 down, 0 none


def lag1_autocorr(r: Sequence[float]) -> float:
    m = fmean(r)
    den = sum((x - m) ** 2 for x in r)
    if den == 0:
        return 0.0
    num = sum((r[i] - m) * (r[i - 1] - m) for i in range(1, len(r)))
    return max(-1.0, min(1.0, num / den))


def regime_estimate(returns: Sequence[float]) -> Regime | None:
    """Trend / chop / mean-reversion probabilities of the last ``SHORT_WINDOW`` returns."""
    r = list(returns[-SHORT_WINDOW:])
    n = len(r)
    if n < MIN_RETURNS:
        return None
    m, s = fmean(r), stdev(r)
    drift = (m > 0) - (m < 0)
    if s == 0:
        # Identical returns: a perfectly steady drift, or no movement at all (no evidence).
        return Regime(1.0, 0.0, 0.0, drift) if drift else None
    z = m / (s / math.sqrt(n))
    trend = 2.0 * phi(abs(z)) - 1.0
    q = phi(-lag1_autocorr(r) * math.sqrt(n))
    rest = 1.0 - trend
    return Regime(trend=trend, chop=rest * (1.0 - q), mean_reversion=rest * q, drift=drift)


def trend_strength(regime: Regime, is_long: bool) -> float:
    """Trend probability signed by the drift relative to the position, in [−1, 1]."""
    return regime.trend * regime.drift * (1 if is_long else -1)


def sigmas(returns: Sequence[float]) -> tuple[float, float] | None:
    """(σ of the short window, σ_ref of the reference window), or None without enough data."""
    if len(returns) < MIN_REF_RETURNS:
        return None
    return stdev(returns[-SHORT_WINDOW:]), stdev(returns[-REF_WINDOW:])


def components(returns: Sequence[float], is_long: bool, age_s: float) -> Components:
    """The four kill-score components from recent returns and the position's age."""
    regime = regime_estimate(returns)
    sig = sigmas(returns)
    flip, drop = 0.0, 0.0
    if regime is not None:
        flip = float(regime_flip(regime.trend, regime.chop, regime.mean_reversion))
        drop = ts_drop(trend_strength(regime, is_long))
    return Components(
        regime_flip=flip,
        sigma_spike=sigma_spike(*sig) if sig is not None else 0.0,
        ts_drop=drop,
        age_penalty=age_penalty(age_s),
    )
