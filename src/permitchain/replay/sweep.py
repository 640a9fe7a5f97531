"""``--sweep NAME=V1,V2,…``: one replay per value (several names: every point of their grid),
spread over the machine's cores (one process each; the candles are read once, before the
workers start, and inherited by them)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from permitchain.contract.errors import ConfigError
from permitchain.replay import report, runner
from permitchain.replay.data import Series
from permitchain.replay.entries import Entry, Rule

# What the workers inherit (set before the pool starts; fork keeps it).
_SHARED: dict[str, Any] = {}


def parse_sweeps(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    out = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        sep_values = ";" if ";" in values else ","  # values with commas: EXIT_TRANCHE_R=1,2,3;2,4,6
        vals = [v.strip() for v in values.split(sep_values) if v.strip()]
        if not sep or not name.strip() or not vals:
            raise ConfigError(f"--sweep {spec!r}: expected NAME=V1,V2,…")
        out.append((name.strip(), vals))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError("--sweep: a name given twice")
    return out


def grid(sweeps: Sequence[tuple[str, list[str]]]) -> list[dict[str, str]]:
    names = [n for n, _ in sweeps]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(v for _, v in sweeps))
    ]


def point_row(point: Mapping[str, str]) -> dict[str, Any]:
    """One grid point, in a worker: replay every file, return the point and the totals."""
    sets = {**_SHARED["sets"], **point}
    settings, options = runner.build_settings(sets, _SHARED["environ"])
    series: list[Series] = _SHARED["series"]
    entries: Rule | list[Entry] = _SHARED["entries"]
    results = runner.replay(series, settings, options, entries)
    per_file = {r.series.name: report.totals([r])["net_r"] for r in results}
    return {"point": dict(point), "totals": report.totals(results), "net_r_by_file": per_file}


def _timed_point(point: Mapping[str, str]) -> tuple[dict[str, Any], int, float]:
    """:func:`point_row`, with the worker's pid and the CPU seconds the point took."""
    c0 = time.process_time()
    row = point_row(point)
    return row, os.getpid(), time.process_time() - c0


def run_sweep(
    series: Sequence[Series],
    entries: Rule | list[Entry],
    sets: Mapping[str, str],
    points: Sequence[Mapping[str, str]],
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    cpu_by_worker: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Rows in the order of ``points``. ``workers`` 1 runs them one after the other here.
    ``cpu_by_worker``, when given, receives the CPU seconds each process spent on points."""
    cpu = cpu_by_worker if cpu_by_worker is not None else {}
    for p in points:  # fail on a bad value before any work starts
        settings, _ = runner.build_settings({**sets, **p})
        short = [s.name for s in series if settings.exit_bar_s < s.interval_s]
        if short:
            raise ConfigError(
                f"EXIT_BAR_S={settings.exit_bar_s:g} is shorter than the candles of {short[0]}"
            )
    _SHARED.update(series=list(series), entries=entries, sets=dict(sets), environ=dict(os.environ))
    n = workers or min(len(points), os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    try:
        if n <= 1 or os.name != "posix":  # the workers inherit the candles by fork
            for p in points:
                row, pid, used = _timed_point(p)
                rows.append(row)
                cpu[pid] = cpu.get(pid, 0.0) + used
                if progress:
                    progress(1)
            return rows
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
            for row, pid, used in pool.map(_timed_point, points):
                rows.append(row)
                cpu[pid] = cpu.get(pid, 0.0) + used
                if progress:
                    progress(1)
        return rows
    finally:
        _SHARED.clear()
