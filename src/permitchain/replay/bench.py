"""``permitchain replay --bench``: how fast the replay is.

The data: one year of one-minute candles (525,600), built in memory from a shared file
(``UNITTEST_BTC-1m.csv`` by default) by repeating its candles on a continuous minute clock.
Measured: one replay on one core (candles per second); then an 8-value sweep of
``FULL_CLOSE_SCORE`` one after the other in this process, and over the machine's cores.
Wall-clock figures: on a shared machine they move with its load, which is printed with them.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from permitchain.replay import runner, sweep
from permitchain.replay.data import Series, read_series

YEAR_MINUTES = 525_600
START_S = 1_672_531_200.0  # 2023-01-01T00:00:00Z
SWEEP_VALUES = ("0.74", "0.75", "0.76", "0.77", "0.78", "0.79", "0.8", "0.81")
ENTRIES = "every:6h:alternate"


@dataclass(frozen=True, slots=True)
class BenchResult:
    candles: int
    source: str
    replay_s: float
    candles_per_s: float
    trades: int
    sweep_points: int
    sweep_serial_s: float
    sweep_parallel_s: float
    sweep_serial_cpu_s: float  # CPU time of the serial sweep (this process)
    sweep_parallel_cpu_s: float  # CPU time of the workers, all together
    busiest_worker_cpu_s: float  # the most CPU one worker spent: the sweep's floor on idle cores
    idle_cores_speedup: float  # serial CPU / busiest worker's CPU: the speedup on idle cores
    workers: int
    speedup: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    cpus: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def year_of_minutes(source: Series, n: int = YEAR_MINUTES) -> Series:
    """``n`` one-minute candles: ``source``'s candles over and over, on a gapless clock."""
    m = len(source)
    idx = [i % m for i in range(n)]
    return Series(
        name=f"{source.name}×{n / m:.1f}",
        symbol=source.symbol,
        interval_s=60.0,
        times=[START_S + 60.0 * i for i in range(n)],
        opens=[source.opens[i] for i in idx],
        highs=[source.highs[i] for i in idx],
        lows=[source.lows[i] for i in idx],
        closes=[source.closes[i] for i in idx],
    )


def run_bench(
    data_file: Path,
    workers: int | None = None,
    candles: int = YEAR_MINUTES,
    say: Callable[[str], None] = print,
) -> BenchResult:
    load_before = os.getloadavg()
    year = year_of_minutes(read_series(data_file), candles)
    settings, options = runner.build_settings({})
    entries = runner.parse_entries(ENTRIES)
    say(
        f"bench: {len(year):,} candles of 1 m built from {data_file.name}; entries {ENTRIES}; "
        f"load average {load_before[0]:.2f} on {os.cpu_count()} CPUs"
    )
    t0 = time.perf_counter()
    (res,) = runner.replay([year], settings, options, entries)
    one = time.perf_counter() - t0
    say(f"one replay: {one:.2f} s, {len(year) / one:,.0f} candles/s, {len(res.trades)} trades")
    points = [{"FULL_CLOSE_SCORE": v} for v in SWEEP_VALUES]
    t0, c0 = time.perf_counter(), time.process_time()
    sweep.run_sweep([year], entries, {}, points, workers=1)
    serial, serial_cpu = time.perf_counter() - t0, time.process_time() - c0
    say(f"sweep of {len(points)} values one after the other: {serial:.2f} s")
    n = workers or os.cpu_count() or 1
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    per_worker: dict[int, float] = {}
    sweep.run_sweep([year], entries, {}, points, workers=n, cpu_by_worker=per_worker)
    parallel = time.perf_counter() - t0
    busiest = max(per_worker.values())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    par_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = os.getloadavg()
    say(
        f"sweep of {len(points)} values on {n} processes: {parallel:.2f} s "
        f"({serial / parallel:.2f}× faster); CPU {serial_cpu:.1f} s one after the other, "
        f"{par_cpu:.1f} s in the workers; load average {load[0]:.2f} after"
    )
    say(
        f"on idle cores: the busiest worker's CPU {busiest:.1f} s → {serial_cpu / busiest:.2f}× "
        f"(serial CPU / busiest worker's CPU, independent of the load)"
    )
    return BenchResult(
        candles=len(year),
        source=data_file.name,
        replay_s=one,
        candles_per_s=len(year) / one,
        trades=len(res.trades),
        sweep_points=len(points),
        sweep_serial_s=serial,
        sweep_parallel_s=parallel,
        sweep_serial_cpu_s=serial_cpu,
        sweep_parallel_cpu_s=par_cpu,
        busiest_worker_cpu_s=busiest,
        idle_cores_speedup=serial_cpu / busiest,
        workers=n,
        speedup=serial / parallel,
        load_before=load_before,
        load_after=load,
        cpus=os.cpu_count() or 1,
    )
