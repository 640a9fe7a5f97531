"""``permitchain bench``: run the benchmark and print a table, JSON, and a PNG histogram."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from permitchain.bench import signing_cost
from permitchain.bench.runner import BenchConfig, run
from permitchain.cli.common import console, err_console, fail, settings
from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import RedisTransport, load_settings


def _f(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


#: The per-plan lines printed for each phase: the result's key, the line's title, an item,
#: and how many items at most (None: all).
PER_PLAN_LINES: list[tuple[str, str, Callable[[str, Any], str], int | None]] = [
    ("cpu_ms_per_plan", "CPU ms per plan ({phase}): ", lambda n, x: f"{n} {x:.2f}", None),
    (
        "ctx_switches_per_plan",
        "context switches per plan ({phase}): ",
        lambda n, x: f"{n} {x:.1f}",
        None,
    ),
    (
        "redis_per_plan",
        "redis µs per plan by command ({phase}; a script's include the commands it runs): ",
        lambda n, x: f"{n} {x['us']:.1f} ({x['calls']:.2f} calls)",
        8,
    ),
]


def render(res: dict[str, Any]) -> None:
    fl = res["floor"]
    console.print(
        f"[bold]floor[/]: redis round trip p50 {fl['rtt_p50_ms'] * 1000:.0f} µs × "
        f"{fl['critical_path_rtts']} sequential round trips = {fl['floor_ms']:.2f} ms; "
        f"with {fl['critical_path_hops']} process hops × {fl['hop_p50_ms'] * 1000:.0f} µs "
        f"(a blocked stream read woken) = {fl['floor_with_hops_ms']:.2f} ms; a reader of the "
        f"results adds a hop and a read ({fl['reader_floor_with_hops_ms']:.2f} ms); "
        f"server clock offset {fl['clock_offset_ms'] * 1000:+.0f} µs"
    )
    t = Table(
        title="end-to-end latency in ms: proposal written → result on the stream; "
        "× the floor (with hops); → result read by a consumer"
    )
    for c in ("plans/s", "p50", "p90", "p99", "max", "verified", "× floor", "read p50/p99"):
        t.add_column(c, justify="right")
    for rate, v in res["latency"].items():
        rd, p50 = v["to_reader"], v["p50_ms"]
        t.add_row(
            rate,
            _f(v["p50_ms"]),
            _f(v["p90_ms"]),
            _f(v["p99_ms"]),
            _f(v["max_ms"]),
            f"{v['verify']['verified']}/{v['verify']['plans']}",
            f"{_f(p50 / fl['floor_ms'], 1)} ({_f(p50 / fl['floor_with_hops_ms'], 1)})",
            f"{_f(rd['p50_ms'])}/{_f(rd['p99_ms'])}",
        )
    console.print(t)
    h = Table(title="per hop (first latency phase)")
    for c in ("hop", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        h.add_column(c, justify="right")
    for name, v in res.get("hops", {}).items():
        h.add_row(
            name, _f(v["p50_ms"], 3), _f(v["p90_ms"], 3), _f(v["p99_ms"], 3), _f(v["max_ms"], 3)
        )
    console.print(h)
    tp = res.get("throughput")
    if tp is not None:
        console.print(
            f"[bold]throughput[/]: {tp['plans_per_s']:.0f} plans/s verified over "
            f"{tp['seconds']:.1f}s ({tp['verify']['verified']}/{tp['plans']} verified, "
            f"{tp['verify']['double_fills']} double fills)"
        )
    phases = [(p, v) for p, v in [*res["latency"].items(), ("throughput", tp)] if v is not None]
    for key, title, item, most in PER_PLAN_LINES:
        for phase, v in phases:
            if v.get(key):
                label = phase if phase == "throughput" else f"{phase}/s"
                items = list(v[key].items())[:most]
                console.print(title.format(phase=label) + ", ".join(item(n, x) for n, x in items))
    for phase, v in phases:
        if v["verify"]["failures_sample"]:
            console.print(
                f"[yellow]{phase}: not verified (sample)[/]: "
                + ", ".join(v["verify"]["failures_sample"])
            )
    if "signing" in res:
        console.print(signing_cost.describe(res["signing"]))
    fp = res["footprint"]
    mem = fp["redis_used_memory_mb"]
    console.print(
        f"[bold]redis memory[/]: {mem['start']:.1f} → {mem['end']:.1f} MB"
        f"{memory_trend(mem.get('series', []))}; "
        + ", ".join(
            f"{n} {_f(v['start'], 0)}→{_f(v['end'], 0)} MB" for n, v in fp["rss_mb"].items()
        )
    )
    k = Table(title="redis keys at the end, by class")
    for c in ("class", "keys", "avg bytes", "≈ MB"):
        k.add_column(c, justify="right")
    for name, v in list(fp.get("redis_keys_by_class", {}).items())[:12]:
        k.add_row(name, str(v["keys"]), str(v["avg_bytes"]), _f(v["est_mb"], 1))
    console.print(k)


def memory_trend(series: list[dict[str, float]]) -> str:
    """Peak, and the growth rate over the second half of the run (flat: ~0 MB/min)."""
    if len(series) < 4:
        return ""
    half = series[len(series) // 2 :]
    dt = (half[-1]["t_s"] - half[0]["t_s"]) / 60
    slope = (half[-1]["used_mb"] - half[0]["used_mb"]) / dt if dt > 0 else 0.0
    peak = max(x["used_mb"] for x in series)
    return f" (peak {peak:.1f} MB; second half of the run {slope:+.1f} MB/min)"


def plot(res: dict[str, Any], samples_path: Path) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        import numpy as np  # noqa: PLC0415 - comes with matplotlib
    except ImportError:
        fail("--plot needs matplotlib: pip install 'permitchain[plot]'")
    phases = [(rate, v) for rate, v in res["latency"].items() if v.get("samples_ms")]
    fig, axes = plt.subplots(1, max(1, len(phases)), figsize=(5 * max(1, len(phases)), 4))
    for ax, (rate, v) in zip(np.atleast_1d(axes), phases, strict=False):
        ax.hist(v["samples_ms"], bins=60, color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(
            f"{rate} plans/s offered: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.1f} ms",
            fontsize=9,
        )
        ax.set_xlabel("proposal → result on the stream (ms)")
        ax.set_ylabel("plans")
    fig.suptitle("permitchain end-to-end latency")
    fig.tight_layout()
    fig.savefig(samples_path, dpi=110)
    err_console.print(f"histogram: {samples_path}")


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Short smoke run (correctness)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
    plot_png: Annotated[Path | None, typer.Option("--plot", help="Write a PNG histogram")] = None,
    rates: Annotated[str, typer.Option(help="Offered rates, comma separated")] = "100,1000",
    duration: Annotated[float, typer.Option(help="Seconds per latency phase")] = 10.0,
    throughput_s: Annotated[
        float, typer.Option(help="Seconds of the throughput phase (0: none)")
    ] = 60.0,
    window: Annotated[int, typer.Option(help="Plans in flight in the throughput phase")] = 2000,
    signed: Annotated[
        bool, typer.Option("--signed", help="The chain signs its permits with Ed25519")
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", help="Run the embedded server with TLS only (a throwaway CA): rediss://"
        ),
    ] = False,
    path_server: Annotated[
        bool,
        typer.Option(
            "--path-server",
            help="Embedded server from PATH (redis-server/valkey-server), the one --tls uses",
        ),
    ] = False,
    transport: Annotated[
        RedisTransport | None,
        typer.Option(help="The chain's Redis transport (default: REDIS_TRANSPORT, else lean)"),
    ] = None,
    exec_record_ttl: Annotated[
        int | None,
        typer.Option(help="The services' EXEC_RECORD_TTL_S in seconds (default: the setting's)"),
    ] = None,
) -> None:
    """Measure the chain: latency at fixed rates, sustained throughput, per hop, footprint."""
    s = settings()
    if tls and s.redis_url is not None:
        fail("--tls starts the embedded server with TLS: unset REDIS_URL (or give a rediss:// one)")
    chosen = (transport or s.redis_transport).value
    if exec_record_ttl is not None:  # refused here, not by three services failing to start
        try:
            load_settings({"EXEC_RECORD_TTL_S": str(exec_record_ttl)})
        except ConfigError as e:
            fail(f"--exec-record-ttl: {e}")
    if quick:
        cfg = dataclasses.replace(
            BenchConfig.quick_config(s.redis_url),
            signed=signed,
            tls=tls,
            transport=chosen,
            path_server=path_server,
        )
    else:
        try:
            rate_list = [float(x) for x in rates.split(",") if x]
        except ValueError:
            fail(f"--rates: not numbers: {rates!r}")
        cfg = BenchConfig(
            rates=rate_list,
            rate_duration_s=duration,
            throughput_s=throughput_s,
            window=window,
            redis_url=s.redis_url,
            exec_record_ttl_s=exec_record_ttl,
            signed=signed,
            tls=tls,
            transport=chosen,
            path_server=path_server,
        )
    out = err_console if as_json else console  # --json: stdout carries the JSON only
    res = run(cfg, progress=lambda m: out.print(f"[dim]bench:[/] {m}"))
    if plot_png is not None:
        plot(res, plot_png)
    for v in res["latency"].values():
        v.pop("samples_ms", None)
    if as_json:
        print(json.dumps(res, default=str))
    else:
        render(res)
    ok = all(
        v["verify"]["failed"] == 0 and v["verify"]["missing"] == 0 for v in res["latency"].values()
    )
    tp = res.get("throughput")
    ok = ok and (tp is None or (tp["verify"]["failed"] == 0 and tp["verify"]["double_fills"] == 0))
    raise typer.Exit(0 if ok else 1)
