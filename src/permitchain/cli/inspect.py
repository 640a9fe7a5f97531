"""Looking inside a running chain: ``status``, ``plans``, ``permits``, ``explain``, ``proof``.

Gathering lives in ``permitchain.ops``; this module only renders (rich tables, or ``--json``
on stdout for scripts) and sets the exit code: ``status`` and ``proof`` exit 1 when
something is unhealthy or a check fails, ``explain`` exits 1 for an unknown plan.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from permitchain.cli.common import console, fail, run_async
from permitchain.contract.keys import Keys
from permitchain.contract.models import iso_utc
from permitchain.contract.settings import Settings
from permitchain.ops import canary, canary_metrics, health, history, proof
from permitchain.ops.check import Check, passed
from permitchain.store import AsyncRedis

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")]


def _emit_json(obj: Any) -> None:
    # Plain print, never rich: rich wraps long lines, which would break the JSON.
    typer.echo(json.dumps(obj, indent=2, default=str))


def _t(ts: float | None) -> str:
    return iso_utc(ts) if ts else "-"


class PlanFilter(StrEnum):
    """``plans --decision``: the planner's decision, or the exec record's state."""

    EXECUTE = "EXECUTE"
    SKIP = "SKIP"
    permitted = "permitted"
    submitted = "submitted"
    unknown = "unknown"
    blocked = "blocked"
    filled = "filled"
    rejected = "rejected"
    dry_run = "dry_run"


def _table(title: str, cols: tuple[str, ...]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in cols:
        t.add_column(c)
    return t


def _s(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


# -- status ----------------------------------------------------------------------------------
def _render_status(h: health.Health) -> None:
    t = _table("services", ("service", "state", "heartbeat age", "version", "pid", "metrics"))
    for name, v in h.services.items():
        t.add_row(
            name,
            "[green]up[/]" if v["up"] else "[red]down[/]",
            f"{v['age_s']}s" if v["up"] else "-",
            _s(v["version"]),
            _s(v["pid"]),
            f":{v['metrics_port']}" if v["metrics_port"] else "-",
        )
    console.print(t)
    t = _table(
        "consumer groups",
        ("stream", "group", "service", "consumers", "lag", "pending", "oldest pending idle"),
    )
    for g in h.groups:
        if not g["exists"]:
            t.add_row(g["stream"], g["group"], g["service"], "[red]missing[/]", "-", "-", "-")
            continue
        t.add_row(
            g["stream"],
            g["group"],
            g["service"],
            str(g["consumers"]),
            _s(g["lag"]),
            str(g["pending"]),
            f"{g['oldest_pending_idle_s']}s",
        )
    console.print(t)
    console.print("streams: " + " · ".join(f"{k} {v}" for k, v in h.streams.items()))
    t = _table(
        "positions: exchange vs ledger (P3.3 check 4 tolerance)",
        ("symbol", "snapshot age", "exchange", "ledger", "epoch", "diff", "tolerance", "verdict"),
    )
    for p in h.positions:
        ok = p["verdict"] == "ok"
        t.add_row(
            p["symbol"],
            f"{p['snapshot_age_s']}s" if p["snapshot_age_s"] is not None else "-",
            _s(p["exchange_amt"]),
            _s(p["ledger_amt"]),
            _s(p["epoch"]),
            _s(p.get("diff")),
            _s(p.get("tolerance")),
            f"[green]{p['verdict']}[/]" if ok else f"[red]{p['verdict']}[/]",
        )
    console.print(t)
    t = _table("recent decisions", ("time", "layer", "plan", "symbol", "decision", "reason"))
    for e in h.recent:
        t.add_row(
            _t(e["ts"]),
            e["layer"],
            e["plan_id"] or "-",
            e["symbol"] or "-",
            e["decision"],
            e["reason"],
        )
    console.print(t)
    console.print(
        f"trading state: [bold]{h.trading_state}[/] · dead letters: "
        f"{h.deadletters['recent']} in the last {h.deadletters['window_s']:g}s "
        f"({h.deadletters['total']} kept)"
    )
    for w in h.warnings:
        console.print(f"[yellow]warning[/] {w}")
    for pr in h.problems:
        console.print(f"[red]UNHEALTHY[/] {pr}")
    if h.healthy:
        console.print("[bold green]healthy[/]")


def status(
    as_json: JsonOpt = False,
    max_lag: Annotated[
        int, typer.Option(help="Lag (entries) above which a group is unhealthy")
    ] = health.DEFAULT_MAX_LAG,
    deadletter_window: Annotated[
        float, typer.Option(help="Dead letters newer than this (seconds) make the chain unhealthy")
    ] = health.DEADLETTER_WINDOW_S,
) -> None:
    """The health box: services, streams, groups, trading state, positions, recent decisions
    (exit 1 when unhealthy)."""

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> health.Health:
        return await health.gather(r, k, s, max_lag=max_lag, deadletter_window_s=deadletter_window)

    h = run_async(body)
    if as_json:
        _emit_json(h.to_dict())
    else:
        _render_status(h)
    raise typer.Exit(0 if h.healthy else 1)


# -- plans, permits, explain -----------------------------------------------------------------
def plans(
    symbol: Annotated[str | None, typer.Option(help="Only this symbol")] = None,
    decision: Annotated[
        PlanFilter | None,
        typer.Option(help="The planner's decision, or the plan's state", case_sensitive=False),
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="How many (newest first)")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The newest plans and what became of each."""

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> list[dict[str, Any]]:
        want = decision.value if decision else None
        return await history.list_plans(r, k, symbol=symbol, decision=want, last=last)

    rows = run_async(body)
    if as_json:
        _emit_json(rows)
        return
    t = _table(
        "plans (newest first)",
        (
            "created",
            "plan",
            "symbol",
            "action",
            "decision",
            "reasons",
            "mode",
            "state",
            "state reason",
        ),
    )
    for p in rows:
        t.add_row(
            _t(p["created_at"]),
            p["plan_id"],
            p["symbol"],
            p["action"],
            p["decision"],
            _s(p["reason_codes"]),
            _s(p["mode"]),
            _s(p["state"]),
            _s(p["state_reason"]),
        )
    console.print(t)


def permits(
    plan: Annotated[
        str | None, typer.Argument(help="A plan id (default: every live permit)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Permits alive now, with their TTLs (or both permits of one plan)."""

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> list[dict[str, Any]]:
        if plan:
            return await history.permits_of(r, k, plan)
        return await history.live_permits(r, k)

    rows = run_async(body)
    if as_json:
        _emit_json(rows)
        return
    t = _table(
        "permits",
        ("plan", "layer", "symbol", "decision", "reason", "ttl", "safe qty", "signed", "note"),
    )
    for p in rows:
        t.add_row(
            p["plan_id"],
            p["layer"],
            _s(p["symbol"]),
            _s(p["decision"]),
            _s(p["reason"]),
            f"{p['ttl_s']}s" if p["ttl_s"] is not None else "-",
            _s(p["safe_close_qty"]),
            "yes" if p["signed"] else "no",
            _s(p.get("note")),
        )
    console.print(t)


def explain(plan: str, as_json: JsonOpt = False) -> None:
    """The whole history of one plan, from the audit stream (readable long after expiry)."""

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> dict[str, Any] | None:
        return await history.explain(r, k, plan)

    out = run_async(body)
    if out is None:
        if as_json:
            _emit_json({"plan_id": plan, "found": False})
        else:
            console.print(f"[red]plan {plan}: nothing in the audit stream or exec records[/]")
        raise typer.Exit(1)
    if as_json:
        _emit_json(out)
        return
    p = out["plan"] or {}
    console.print(
        f"[bold]plan {plan}[/] {out['symbol']} {p.get('action', '')} "
        f"mode {p.get('mode', '?')} → outcome [bold]{out['outcome']}[/]"
    )
    # One line per step (greps well, never wrapped into a narrow table).
    t0 = out["steps"][0]["ts"] if out["steps"] else time.time()
    for st in out["steps"]:
        console.print(
            f"  {_t(st['ts'])} +{(st['ts'] - t0) * 1000:8.1f}ms  [cyan]{st['layer']:<14}[/] "
            f"[bold]{st['decision']:<9}[/] {st['reason']}  {st['detail']}",
            soft_wrap=True,
            highlight=False,
        )
    live = [q for q in out["permits_now"] if q["present"]]
    console.print(
        "permits now: "
        + (
            ", ".join(f"{q['layer']} {q['decision']} ttl {q['ttl_s']}s" for q in live)
            or "none (consumed or expired)"
        )
    )


# -- proof -----------------------------------------------------------------------------------
def proof_cmd(
    canary: Annotated[
        bool, typer.Option("--canary", help="Send a dry-run canary through every layer")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Canary: seconds to wait for each layer")
    ] = canary.CANARY_TIMEOUT_S,
    as_json: JsonOpt = False,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="--canary: also write its metrics here (node_exporter textfile)"),
    ] = None,
) -> None:
    """Prove the chain works: services, metrics, snapshots, ledgers, permits, plans, dead
    letters; --canary follows a harmless plan through every layer (exit 1 on any failure),
    a new plan on every run, and records its outcome (permitchain_canary_* metrics)."""
    if metrics_file is not None and not canary:
        fail("--metrics-file: only with --canary")

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> tuple[list[Check], dict[str, str]]:
        checks = await proof.run_proof(r, k, s, canary=canary, timeout_s=timeout)
        return checks, (await canary_metrics.read(r, k) if metrics_file else {})

    checks, last = run_async(body)
    if metrics_file is not None:
        canary_metrics.write_textfile(metrics_file, last)
    ok = passed(checks)
    if as_json:
        _emit_json({"passed": ok, "checks": [c.to_dict() for c in checks]})
    else:
        t = _table("proof", ("check", "layer", "result", "detail"))
        for c in checks:
            mark = (
                "[green]pass[/]" if c.ok else "[yellow]skip[/]" if c.ok is None else "[red]FAIL[/]"
            )
            t.add_row(c.name, c.layer, mark, c.detail)
        console.print(t)
        failed = [c for c in checks if c.ok is False]
        console.print(
            "[bold green]proof passed[/]"
            if ok
            else "[bold red]proof FAILED[/]: " + "; ".join(f"{c.layer}: {c.name}" for c in failed)
        )
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(plans)
    app.command()(permits)
    app.command()(explain)
    app.command("proof")(proof_cmd)
