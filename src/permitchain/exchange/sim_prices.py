"""Simulated prices: a seeded random walk with volatility regimes that moves the sim's marks
and triggers our reduce-only stops, so the exit brain has a market to react to.

The walk is geometric: each step multiplies the price by exp(drift + σ·ε), ε ~ N(0, 1), with
(drift, σ) from the current regime; at each step the regime switches with probability
``switch_prob`` to one drawn at random. Prices are rounded half-even to the tick. The
default regimes are a fast market for demonstrations (a trend makes several R within a
minute at 1 step per second), not a model of any real one:

========== ========= =========
regime     drift     σ
========== ========= =========
calm       0         0.10 %
trend_up   +0.08 %   0.15 %
trend_down −0.08 %   0.15 %
volatile   0         0.50 %
========== ========= =========

:class:`PriceWalk` and :func:`price_path` are pure (no Redis, no clock): the same seed gives
the same path. :func:`drive_prices` is the task that applies one step per symbol every
``interval_s`` to the sim (the exit brain runs it when ``EXCHANGE=sim`` and
``SIM_DRIVE_PRICES=true``). A symbol starts from its current sim mark (or entry price) and
is left alone until it has one; a mark set from outside (``permitchain sim``, a test) is
adopted and the walk continues from it.

With ``SIM_PRICE_FILE`` the marks come from recorded candles instead (:func:`drive_file`):
each candle's close becomes every watched symbol's mark, with the candle's time as the
mark's own time (``mark_time``, which the exit brain buckets into bars), one candle per
``interval / SIM_PRICE_SPEED`` seconds; after the last candle the marks stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_stops import trigger_stop
from permitchain.replay.data import read_series
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.service import RETRYABLE

log = logging.getLogger("permitchain.sim.prices")


@dataclass(frozen=True, slots=True)
class VolRegime:
    name: str
    drift: float  # mean log return per step
    sigma: float  # standard deviation of the log return per step


DEFAULT_REGIMES: tuple[VolRegime, ...] = (
    VolRegime("calm", 0.0, 0.001),
    VolRegime("trend_up", 0.0008, 0.0015),
    VolRegime("trend_down", -0.0008, 0.0015),
    VolRegime("volatile", 0.0, 0.005),
)
SWITCH_PROB = 0.02
DEFAULT_TICK = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class PriceStep:
    price: Decimal
    regime: str


def round_to_tick(price: float, tick: Decimal) -> Decimal:
    """Nearest multiple of the tick (half-even), never below one tick."""
    steps = (Decimal(repr(price)) / tick).to_integral_value(rounding=ROUND_HALF_EVEN)
    return max(steps, Decimal(1)) * tick


class PriceWalk:
    """One symbol's walk. Keeps the unrounded level, so small steps are not lost to the tick."""

    def __init__(
        self,
        start: Decimal,
        seed: int,
        *,
        tick: Decimal = DEFAULT_TICK,
        regimes: Sequence[VolRegime] = DEFAULT_REGIMES,
        switch_prob: float = SWITCH_PROB,
    ) -> None:
        if start <= 0 or tick <= 0 or not regimes:
            raise ValueError("PriceWalk needs a positive start and tick and some regimes")
        self.rng = random.Random(seed)
        self.level = float(start)
        self.tick = tick
        self.regimes = tuple(regimes)
        self.regime = self.regimes[0]
        self.switch_prob = switch_prob
        self.last: Decimal | None = None

    def rebase(self, price: Decimal) -> None:
        """Continue from a price set from outside."""
        self.level = float(price)
        self.last = price

    def step(self) -> PriceStep:
        if self.rng.random() < self.switch_prob:
            self.regime = self.rng.choice(self.regimes)
        eps = self.rng.gauss(0.0, 1.0)
        self.level *= math.exp(self.regime.drift + self.regime.sigma * eps)
        self.last = round_to_tick(self.level, self.tick)
        return PriceStep(self.last, self.regime.name)


def price_path(
    start: Decimal,
    seed: int,
    *,
    tick: Decimal = DEFAULT_TICK,
    regimes: Sequence[VolRegime] = DEFAULT_REGIMES,
    switch_prob: float = SWITCH_PROB,
) -> Iterator[PriceStep]:
    """The endless price path of one walk (take what you need with ``itertools.islice``)."""
    walk = PriceWalk(start, seed, tick=tick, regimes=regimes, switch_prob=switch_prob)
    while True:
        yield walk.step()


def symbol_seed(seed: int, symbol: str) -> int:
    """A stable per-symbol seed, so symbols do not move in lockstep."""
    return seed ^ zlib.crc32(symbol.encode())


async def step_prices(
    sim: SimExchange,
    symbols: Sequence[str],
    seed: int,
    walks: dict[str, PriceWalk],
    *,
    regimes: Sequence[VolRegime] = DEFAULT_REGIMES,
    switch_prob: float = SWITCH_PROB,
) -> dict[str, Decimal]:
    """One step for every symbol that has a price: write the new mark, then trigger stops.
    Returns the new marks."""
    pipe = sim.redis.pipeline(transaction=False)
    for s in symbols:
        pipe.hgetall(sim.keys.sim_position(s))
        pipe.hget(sim.keys.sim_filters(s), "tick_size")
    rows = await pipe.execute()
    out: dict[str, Decimal] = {}
    for i, s in enumerate(symbols):
        pos, tick = rows[2 * i], rows[2 * i + 1]
        mark, entry = pos.get("mark_price"), pos.get("entry_price")
        current = Decimal(mark or entry) if (mark or entry) else None
        walk = walks.get(s)
        if walk is None:
            if current is None or current <= 0:
                continue  # nothing to start from: wait until the symbol has a price
            walk = walks[s] = PriceWalk(
                current,
                symbol_seed(seed, s),
                tick=Decimal(tick or DEFAULT_TICK),
                regimes=regimes,
                switch_prob=switch_prob,
            )
            walk.rebase(current)
        elif current is not None and current > 0 and current != walk.last:
            walk.rebase(current)
        out[s] = walk.step().price
        await sim.set_price(s, out[s])
        order = await trigger_stop(sim, s)
        if order is not None:
            log.info(
                "sim: stop %s %s %s at %s (%s)",
                s,
                order.side,
                order.status.value,
                out[s],
                order.client_order_id,
            )
    return out


async def drive_prices(
    sim: SimExchange,
    symbols: Sequence[str],
    seed: int,
    stop: asyncio.Event,
    *,
    interval_s: float = 1.0,
    regimes: Sequence[VolRegime] = DEFAULT_REGIMES,
    switch_prob: float = SWITCH_PROB,
) -> None:
    """Step the sim's prices every ``interval_s`` until ``stop`` is set. Redis faults are
    logged and retried after a backoff; they never end the task."""
    walks: dict[str, PriceWalk] = {}
    backoff = Backoff(base_s=0.2, cap_s=10.0)
    log.info(
        "sim: driving prices of %s (seed %d, every %.2fs)", ",".join(symbols), seed, interval_s
    )
    while not stop.is_set():
        delay = interval_s
        try:
            await step_prices(sim, symbols, seed, walks, regimes=regimes, switch_prob=switch_prob)
            backoff.reset()
        except RETRYABLE as e:
            delay = max(delay, backoff.next_delay())
            log.warning("sim: price step failed (%s); retrying in %.2fs", e, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


def file_clock(first_s: float, speed: float, now: float) -> float:
    """The offset that puts a recorded candle's time ``t`` on today's accelerated clock:
    ``t / speed + offset``, the offset a whole number of days (bars of any length that
    divides a day stay aligned with the file's own)."""
    return math.floor((now - first_s / speed) / 86400) * 86400


async def drive_file(
    sim: SimExchange,
    symbols: Sequence[str],
    path: str | Path,
    stop: asyncio.Event,
    *,
    speed: float = 1.0,
) -> None:
    """Replay a candle file (any layout ``permitchain replay`` reads) as the sim's marks."""
    series = await asyncio.to_thread(read_series, path)
    start = time.time()
    t0 = series.times[0]
    offset = file_clock(t0, speed, start)
    log.info(
        "sim: driving prices of %s from %s (%d candles, speed %g)",
        ",".join(symbols),
        series.name,
        len(series),
        speed,
    )
    for t, close in zip(series.times, series.closes, strict=True):
        delay = start + (t - t0) / speed - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        for s in symbols:
            try:
                await sim.set_price(s, close, at=t / speed + offset)
                order = await trigger_stop(sim, s)
            except RETRYABLE as e:
                log.warning("sim: price step failed (%s); the candle is skipped", e)
                continue
            if order is not None:
                log.info(
                    "sim: stop %s %s %s at %s (%s)",
                    s,
                    order.side,
                    order.status.value,
                    close,
                    order.client_order_id,
                )
    log.info("sim: %s replayed to its end; marks stay at the last close", series.name)
    await stop.wait()
