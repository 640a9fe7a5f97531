"""``permitchain replay``: the exit policy over recorded candles (docs/replay.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from permitchain.cli.common import console, err_console, fail
from permitchain.contract.errors import ConfigError
from permitchain.replay import report, runner, sweep
from permitchain.replay.data import DataError
from permitchain.replay.entries import Rule

SHARED_DEFAULT = Path("../shared/data/klines/UNITTEST_BTC-1m.csv")


@contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal (and --json is not piped there)."""
    if not err_console.is_terminal or total <= 0:
        yield None
        return
    with Progress(
        TextColumn(what),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def replay_cmd(
    data: Annotated[
        list[Path] | None,
        typer.Argument(
            help="candle files: Binance kline CSV, OHLCV CSV with a header, Freqtrade JSON"
        ),
    ] = None,
    entries: Annotated[
        str,
        typer.Option(
            help="every:<n><m|h|d>:<long|short|alternate>, or a CSV of entries "
            "(time,symbol,side,qty,entry_price)"
        ),
    ] = runner.DEFAULT_ENTRIES,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="NAME=VALUE: a setting (FULL_CLOSE_SCORE, EXIT_BAR_S, …) or a "
            "REPLAY_ option; repeatable",
        ),
    ] = None,
    sweep_: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="NAME=V1,V2,…: one replay per value; several: their grid"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="write price with exits and the equity curve to this PNG")
    ] = None,
    trades: Annotated[
        bool,
        typer.Option("--trades/--summary", help="list every trade and exit, or only the totals"),
    ] = True,
    workers: Annotated[int | None, typer.Option(help="sweep processes (default: CPUs)")] = None,
    bench: Annotated[
        bool,
        typer.Option(
            "--bench",
            help="measure speed on a year of 1-minute candles built from DATA "
            f"(default {SHARED_DEFAULT})",
        ),
    ] = False,
) -> None:
    """Replay the exit brain's own kernel and the gate's decisions over recorded candles."""
    try:
        if bench:
            run_bench(data, workers, as_json)
            return
        if not data:
            fail("replay: give at least one candle file (DATA)")
        sets = runner.parse_sets(set_ or [])
        settings, options = runner.build_settings(sets)
        ents = runner.parse_entries(entries)
        series = runner.load([str(p) for p in data])
    except (ConfigError, DataError) as e:
        fail(str(e))
    if sweep_:
        run_sweep(series, ents, sets, sweep_, workers, as_json)
        return
    total = sum(len(s) for s in series)
    try:
        with progress_bar(total, "replay") as step:
            results = runner.replay(series, settings, options, ents, step)
    except ConfigError as e:
        fail(str(e))
    data_out = report.report(
        results,
        runner.inputs_dict(series, entries, settings, options),
        with_trades=trades or as_json,
    )
    if as_json:
        typer.echo(report.to_json(data_out), nl=False)
    else:
        report.print_report(data_out, console, trades)
    if plot is not None:
        try:
            from permitchain.replay.plot import plot as draw  # noqa: PLC0415 - optional extra
        except ImportError:
            fail("--plot needs matplotlib: pip install 'permitchain[plot]'")
        draw(results, plot)
        err_console.print(f"plot: {plot}")


def run_sweep(
    series: list[Any],
    ents: Rule | list[Any],
    sets: dict[str, str],
    specs: list[str],
    workers: int | None,
    as_json: bool,
) -> None:
    try:
        sweeps = sweep.parse_sweeps(specs)
        points = sweep.grid(sweeps)
        with progress_bar(len(points), "sweep") as step:
            rows = sweep.run_sweep(series, ents, sets, points, workers, step)
    except ConfigError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps({"sweep": rows}, indent=2, sort_keys=True))
        return
    names = [n for n, _ in sweeps]
    files = [s.name for s in series]
    table = Table(title="replay sweep (R: multiples of the initial risk, net of fees)")
    per_file = [f"net R {f}" for f in files] if len(files) > 1 else []
    for h in (
        *names,
        *per_file,
        "net R",
        "hold R",
        "SL/TP R",
        "trades",
        "exits/trade",
        "full closes",
        "stops",
        "h in trade",
        "flip share",
    ):
        table.add_column(h, justify="right")
    for row in rows:
        t = row["totals"]
        by_file = [str(row["net_r_by_file"][f]) for f in files] if len(files) > 1 else []
        table.add_row(
            *(row["point"][n] for n in names),
            *by_file,
            str(t["net_r"]),
            str(t["hold_r"]),
            str(t["baseline_r"]),
            str(t["trades"]),
            str(t["exits_per_trade"]),
            str(t["full_closes"]),
            str(t["stops_hit"]),
            str(t["mean_hours_in_trade"]),
            str(t["kill_score"]["regime_flip_share"]),
        )
    report.wide(console).print(table)


def run_bench(data: list[Path] | None, workers: int | None, as_json: bool) -> None:
    from permitchain.replay.bench import run_bench as bench  # noqa: PLC0415

    source = data[0] if data else SHARED_DEFAULT
    if not source.exists():
        fail(f"--bench: {source}: no such file (give a 1-minute candle file)")
    res = bench(source, workers, say=(lambda _m: None) if as_json else console.print)
    if as_json:
        typer.echo(json.dumps(res.as_dict(), indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_cmd)
