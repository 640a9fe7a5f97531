"""Market estimators: recent mark prices → the kill-score components. Pure, ``float`` maths.

**Bars in time.** Marks are bucketed into bars of ``EXIT_BAR_S`` seconds (:class:`Bars`):
bar ``floor(t / bar_s)``, its close is the last mark seen in it; the bar still forming counts
with its latest mark. A bar without any mark (a gap: the service was down, a candle is
missing) clears the series, so returns are only ever taken between consecutive bars. The
live service feeds every mark it samples, the replay every candle's close at its open time:
the same function, so a window of 20 bars means the same minutes live and in replay.

The closes become log returns r_t = ln(p_t / p_{t−1}). Windows (:class:`Windows`): the last
``short`` returns (20) for the current σ, the regime and the trend; the last ``ref`` (120) for
the reference σ_ref.

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


@dataclass(frozen=True, slots=True)
class Windows:
    """Estimator windows, in bars (returns)."""

    short: int = SHORT_WINDOW
    ref: int = REF_WINDOW

    @property
    def min_returns(self) -> int:
        return max(2, self.short // 2)

    @property
    def min_ref_returns(self) -> int:
        return max(2, self.ref // 3)


DEFAULT_WINDOWS = Windows()


class Bars:
    """Closes of consecutive time bars of ``bar_s`` seconds, the forming one included; at most
    ``keep`` of them. :meth:`add` one mark at a time, in time order."""

    __slots__ = ("bar_s", "closes", "index", "keep", "returns")

    def __init__(self, bar_s: float, keep: int) -> None:
        if bar_s <= 0 or keep < 2:
            raise ValueError("Bars needs a positive bar length and keep ≥ 2")
        self.bar_s, self.keep = bar_s, keep
        self.closes: list[Decimal] = []
        self.returns: list[float] = []  # ln(close_t / close_{t−1}) of the kept closes
        self.index: int | None = None  # the forming bar's number

    def clear(self) -> None:
        self.closes.clear()
        self.returns.clear()
        self.index = None

    def add(self, ts: float, price: Decimal) -> bool:
        """Take a mark at time ``ts``. Returns False when it started the series afresh after a
        gap (a bar without marks) or a mark out of order."""
        if price <= 0:
            raise ValueError(f"Bars needs positive prices, got {price}")
        i = math.floor(ts / self.bar_s)
        if self.index is not None and i == self.index:
            self.closes[-1] = price  # the forming bar's latest mark
            if len(self.closes) > 1:
                self.returns[-1] = math.log(float(price) / float(self.closes[-2]))
            return True
        fresh = self.index is None or i != self.index + 1
        if fresh:
            self.clear()
        elif self.closes:
            self.returns.append(math.log(float(price) / float(self.closes[-1])))
        self.closes.append(price)
        self.index = i
        if len(self.closes) > self.keep:
            del self.closes[0]
            del self.returns[0]
        return not fresh

    def __len__(self) -> int:
        return len(self.closes)


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


def mean_stdev(r: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1), two passes in plain floats (n ≥ 2)."""
    n = len(r)
    m = math.fsum(r) / n
    return m, math.sqrt(math.fsum((x - m) * (x - m) for x in r) / (n - 1))


def lag1_autocorr(r: Sequence[float]) -> float:
    m = math.fsum(r) / len(r)
    d = [x - m for x in r]
    den = math.fsum(x * x for x in d)
    if den == 0:
        return 0.0
    num = math.fsum(a * b for a, b in pairwise(d))
    return max(-1.0, min(1.0, num / den))


def regime_estimate(returns: Sequence[float], windows: Windows = DEFAULT_WINDOWS) -> Regime | None:
    """Trend / chop / mean-reversion probabilities of the last ``windows.short`` returns."""
    r = returns[-windows.short :]
    n = len(r)
    if n < windows.min_returns:
        return None
    m, s = mean_stdev(r)
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


def sigmas(
    returns: Sequence[float], windows: Windows = DEFAULT_WINDOWS
) -> tuple[float, float] | None:
    """(σ of the short window, σ_ref of the reference window), or None without enough data."""
    if len(returns) < windows.min_ref_returns:
        return None
    return mean_stdev(returns[-windows.short :])[1], mean_stdev(returns[-windows.ref :])[1]


def components(
    returns: Sequence[float], is_long: bool, age_s: float, windows: Windows = DEFAULT_WINDOWS
) -> Components:
    """The four kill-score components from recent returns and the position's age."""
    regime = regime_estimate(returns, windows)
    sig = sigmas(returns, windows)
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
