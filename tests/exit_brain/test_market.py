"""Market estimators: returns → regime, trend strength, sigma spike, components. Pure."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from permitchain.exit_brain import market
from permitchain.exit_brain.kernel import Components


def noisy(n: int, drift: float, sigma: float, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [drift + sigma * rng.gauss(0, 1) for _ in range(n)]


def test_log_returns() -> None:
    r = market.log_returns([Decimal(100), Decimal(110), Decimal(99)])
    assert r == pytest.approx([math.log(1.1), math.log(0.9)])
    assert market.log_returns([Decimal(1)]) == []
    with pytest.raises(ValueError, match="positive"):
        market.log_returns([Decimal(1), Decimal(0)])


def test_steady_trend_is_a_trend_in_favour_of_the_long() -> None:
    reg = market.regime_estimate(noisy(30, 0.002, 0.0005))
    assert reg is not None and reg.trend > 0.99 and reg.drift == 1
    assert market.trend_strength(reg, True) > 0.99
    assert market.trend_strength(reg, False) < -0.99
    long = market.components(noisy(30, 0.002, 0.0005), True, 0)
    short = market.components(noisy(30, 0.002, 0.0005), False, 0)
    assert long.regime_flip == 0 and long.ts_drop == 0.0
    assert short.ts_drop == 0.5  # the trend runs against the short: full drop


def test_back_and_forth_is_mean_reversion_and_flips() -> None:
    r = [0.003 if i % 2 else -0.003 for i in range(20)]
    reg = market.regime_estimate(r)
    assert reg is not None
    assert reg.trend < 0.01 and reg.mean_reversion > 0.99
    assert market.components(r, True, 0).regime_flip == 1.0


def test_no_evidence_without_data() -> None:
    assert market.regime_estimate(noisy(market.MIN_RETURNS - 1, 0.01, 0.001)) is None
    assert market.regime_estimate([0.0] * 30) is None  # no movement at all
    assert market.sigmas(noisy(market.MIN_REF_RETURNS - 1, 0, 0.001)) is None
    c = market.components([], True, 7200)
    assert c == Components(0.0, 0.0, 0.0, 7200 / 86400)


def test_identical_returns_are_a_perfect_trend() -> None:
    reg = market.regime_estimate([0.001] * 20)
    assert reg is not None and reg.trend == 1.0 and reg.drift == 1


def test_sigma_spike_when_volatility_jumps() -> None:
    calm = noisy(100, 0, 0.001, seed=2)
    wild = noisy(market.SHORT_WINDOW, 0, 0.004, seed=3)
    c = market.components(calm + wild, True, 0)
    assert c.sigma_spike > 1.0
    assert market.components(calm, True, 0).sigma_spike < 0.5


@given(st.lists(st.floats(-0.05, 0.05), min_size=market.MIN_RETURNS, max_size=60))
def test_regime_probabilities_sum_to_one(r: list[float]) -> None:
    reg = market.regime_estimate(r)
    if reg is None:
        return
    parts = (reg.trend, reg.chop, reg.mean_reversion)
    assert all(0.0 <= p <= 1.0 for p in parts)
    assert sum(parts) == pytest.approx(1.0)
    c = market.components(r, True, 0)
    assert 0 <= c.ts_drop <= 0.5 and 0 <= c.sigma_spike <= 2 and c.regime_flip in (0.0, 1.0)


def test_random_walk_flip_rate_is_about_the_threshold() -> None:
    """Calibration: for a driftless walk the trend probability is ~uniform, so the flip fires
    in about 30 % of windows."""
    flips = sum(
        market.components(noisy(20, 0, 0.001, seed=s), True, 0).regime_flip for s in range(2000)
    )
    assert 0.25 < flips / 2000 < 0.35
