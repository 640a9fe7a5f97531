"""What a replay reports: per trade, per file and in total; as plain data (``--json``,
byte-identical for the same inputs) and as tables for people."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from permitchain.replay.engine import END, STOP, Exit, SeriesResult, Trade

COMPONENT_NAMES = ("regime_flip", "sigma_spike", "ts_drop", "age_penalty")
CLOSES = frozenset({"PARTIAL_25", "PARTIAL_50", "PARTIAL_75", "FULL_CLOSE_PROPOSED"})
BIN_EDGES = tuple(Decimal("0.5") + Decimal("0.05") * i for i in range(10))  # 0.50 … 0.95


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dec(d: Decimal | None) -> str | None:
    if d is None:
        return None
    s = format(d.normalize(), "f")
    return "0" if s in ("-0", "") else s


def money(d: Decimal | None) -> str | None:
    """Quote-currency amounts to 10 significant digits (prices of 0.00004 stay readable)."""
    if d is None:
        return None
    return dec(Decimal(format(d, ".10g")))


def r4(x: float) -> float:
    return round(x, 4) + 0.0


def exit_dict(e: Exit) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": iso(e.time_s),
        "action": e.action,
        "tranche": e.tranche,
        "executed": e.executed,
        "reason": e.reason,
        "qty": dec(e.qty),
        "price": dec(e.price),
        "new_sl": dec(e.new_sl),
        "pnl": money(e.pnl),
        "r": dec(e.r),
        "kill_score": dec(e.kill_score),
        "r_net": dec(e.r_net),
        "components": None,
    }
    if e.components is not None:
        out["components"] = {n: r4(v) for n, v in zip(COMPONENT_NAMES, e.components, strict=True)}
    return out


def trade_dict(t: Trade) -> dict[str, Any]:
    return {
        "side": "LONG" if t.is_long else "SHORT",
        "entry_time": iso(t.entry_s),
        "entry_price": dec(t.entry_price),
        "qty": dec(t.qty),
        "end_time": iso(t.end_s),
        "hours": r4((t.end_s - t.entry_s) / 3600),
        "r": dec(t.r),
        "pnl": money(t.pnl),
        "fees": money(t.fees),
        "hold_r": dec(t.hold_r),
        "baseline_r": dec(t.base_r),
        "exits": [exit_dict(e) for e in t.exits],
    }


def max_drawdown(equity: Sequence[float]) -> float:
    peak, worst = 0.0, 0.0
    for x in equity:
        peak = max(peak, x)
        worst = max(worst, peak - x)
    return worst


def score_bins(scores: Sequence[Decimal]) -> dict[str, int]:
    bins = Counter[str]()
    for s in scores:
        i = min(int((s - Decimal("0.5")) / Decimal("0.05")), len(BIN_EDGES) - 1) if s >= 0.5 else 0
        lo = BIN_EDGES[i]
        bins[f"{lo:.2f}-{lo + Decimal('0.05'):.2f}"] += 1
    return {k: bins[k] for k in sorted(bins)}


def quantile(sorted_scores: Sequence[Decimal], q: float) -> str | None:
    if not sorted_scores:
        return None
    return dec(sorted_scores[min(len(sorted_scores) - 1, int(q * len(sorted_scores)))])


def totals(results: Sequence[SeriesResult]) -> dict[str, Any]:
    trades = [t for r in results for t in r.trades]
    exits = [e for t in trades for e in t.exits]
    closes = [e for e in exits if e.executed and e.action in CLOSES]
    refused = Counter(e.reason for e in exits if not e.executed)
    n = len(trades)
    scores = sorted(s for r in results for s in r.kill_scores)
    decisions = sum(r.decisions for r in results)
    span = sum(r.series.times[-1] - r.series.times[0] + r.series.interval_s for r in results)
    in_trade = sum(t.end_s - t.entry_s for t in trades)
    net_r = sum((t.r for t in trades), Decimal(0))
    hold_r = sum((t.hold_r for t in trades), Decimal(0))
    base_r = sum((t.base_r for t in trades), Decimal(0))
    return {
        "trades": n,
        "entries_skipped": sum(r.skipped_entries for r in results),
        "net_r": dec(net_r),
        "hold_r": dec(hold_r),
        "baseline_r": dec(base_r),
        "net_minus_hold_r": dec(net_r - hold_r),
        "net_minus_baseline_r": dec(net_r - base_r),
        "mean_r": dec((net_r / n).quantize(Decimal("0.0001"))) if n else None,
        "win_rate": r4(sum(1 for t in trades if t.r > 0) / n) if n else None,
        "exits": len(closes),
        "exits_per_trade": r4(len(closes) / n) if n else None,
        "stop_moves": sum(1 for e in exits if e.executed and e.action == "UPDATE_SL"),
        "stops_hit": sum(1 for e in exits if e.action == STOP),
        "closed_at_end": sum(1 for e in exits if e.action == END),
        "full_closes": sum(1 for e in closes if e.action == "FULL_CLOSE_PROPOSED"),
        "full_closes_without_sigma_spike": sum(
            1
            for e in closes
            if e.action == "FULL_CLOSE_PROPOSED" and e.components and e.components[1] == 0
        ),
        "full_closes_first_hour": sum(
            1
            for t in trades
            for e in t.exits
            if e.executed and e.action == "FULL_CLOSE_PROPOSED" and e.time_s - t.entry_s <= 3600
        ),
        "not_executed": dict(sorted(refused.items())),
        "mean_hours_in_trade": r4(in_trade / n / 3600) if n else None,
        "time_in_trade_share": r4(in_trade / span) if span else None,
        "max_drawdown_r": r4(sum(max_drawdown(r.equity) for r in results))
        if len(results) == 1
        else None,
        "kill_score": {
            "decisions": decisions,
            "regime_flip_share": r4(sum(r.flips for r in results) / decisions)
            if decisions
            else None,
            "p50": quantile(scores, 0.5),
            "p90": quantile(scores, 0.9),
            "max": dec(scores[-1]) if scores else None,
            "bins": score_bins(scores),
        },
    }


def file_dict(r: SeriesResult, with_trades: bool = True) -> dict[str, Any]:
    s = r.series
    out = {
        "file": s.name,
        "symbol": s.symbol,
        "candles": len(s),
        "interval_s": s.interval_s,
        "from": iso(s.times[0]),
        "to": iso(s.times[-1]),
        "gaps": len(s.gaps),
        "missing_candles": s.missing,
        "window_restarts": r.restarts,
        "warming_bars_in_trade": r.warming,
        "quote_pnl": {
            "net": money(sum((t.pnl for t in r.trades), Decimal(0))),
            "hold": money(sum((t.hold_pnl for t in r.trades), Decimal(0))),
            "baseline": money(sum((t.base_pnl for t in r.trades), Decimal(0))),
            "fees": money(sum((t.fees for t in r.trades), Decimal(0))),
        },
        "totals": totals([r]),
    }
    if with_trades:
        out["trades"] = [trade_dict(t) for t in r.trades]
    return out


def report(
    results: Sequence[SeriesResult], inputs: dict[str, Any], with_trades: bool = True
) -> dict[str, Any]:
    return {
        "inputs": inputs,
        "files": [file_dict(r, with_trades) for r in results],
        "totals": totals(results),
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- for people ------------------------------------------------------------------------------
def _s(v: object) -> str:
    return "-" if v is None else str(v)


def wide(console: Console) -> Console:
    """Tables are not squeezed into 80 columns when the output is not a terminal."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=max(console.width, 200), highlight=False)


def summary_row(t: dict[str, Any]) -> list[str]:
    ks = t["kill_score"]
    keys = (
        "trades",
        "net_r",
        "hold_r",
        "baseline_r",
        "exits_per_trade",
        "stops_hit",
        "mean_hours_in_trade",
        "max_drawdown_r",
    )
    return [
        *(_s(t[k]) for k in keys),
        f"{_s(ks['p50'])}/{_s(ks['p90'])}",
        _s(ks["regime_flip_share"]),
    ]


SUMMARY_HEADERS = (
    "trades",
    "net R",
    "hold R",
    "SL/TP R",
    "exits/trade",
    "stops",
    "h in trade",
    "max DD R",
    "kill p50/p90",
    "flip share",
)


def print_report(data: dict[str, Any], console: Console, with_trades: bool) -> None:
    console = wide(console)
    inp = data["inputs"]
    console.print(
        f"replay: entries {inp['entries']}; fills at the next open, slippage "
        f"{inp['options']['REPLAY_SLIPPAGE']}, fee {inp['settings']['EXIT_FEE_RATE']} "
        f"a side; baseline: stop {inp['options']['REPLAY_BASELINE_STOP_R']} R / take "
        f"{inp['options']['REPLAY_BASELINE_TAKE_R']} R; mode {inp['settings']['APPLY_MODE']}"
    )
    for f in data["files"]:
        if with_trades and f.get("trades"):
            print_trades(f, console)
    table = Table(title="replay summary (R: multiples of the initial risk, net of fees)")
    table.add_column("file")
    for h in SUMMARY_HEADERS:
        table.add_column(h, justify="right")
    for f in data["files"]:
        table.add_row(f["file"], *summary_row(f["totals"]))
    if len(data["files"]) > 1:
        table.add_row("all", *summary_row(data["totals"]))
    console.print(table)
    for f in data["files"]:
        q = f["quote_pnl"]
        console.print(
            f"{f['file']}: {f['candles']} candles of {f['interval_s']:g}s, "
            f"{f['from']} → {f['to']}; {f['gaps']} gaps ({f['missing_candles']} "
            f"candles missing, windows restarted {f['window_restarts']}×); "
            f"PnL net {q['net']} hold {q['hold']} SL/TP {q['baseline']}, fees {q['fees']}; "
            f"not executed: {refusals(f['totals']['not_executed'])}"
        )


def refusals(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} ×{n}" for reason, n in counts.items()) or "none"


def print_trades(f: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{f['file']}: trades")
    for h in (
        "#",
        "time",
        "side/action",
        "qty",
        "price",
        "kill",
        "components",
        "R_net",
        "R",
        "note",
    ):
        table.add_column(
            h, justify="right" if h in ("qty", "price", "kill", "R_net", "R") else "left"
        )
    for i, t in enumerate(f["trades"], 1):
        table.add_row(
            str(i),
            t["entry_time"],
            f"{t['side']} entry",
            t["qty"],
            t["entry_price"],
            "",
            "",
            "",
            "",
            "",
        )
        for e in t["exits"]:
            comps = e["components"]
            c = " ".join(f"{v:g}" for v in comps.values()) if comps else ""
            note = "" if e["executed"] else f"not executed: {e['reason']}"
            if e["new_sl"]:
                note = (note + f" sl→{e['new_sl']}").strip()
            table.add_row(
                "",
                e["time"],
                e["action"],
                e["qty"] if e["executed"] else "",
                e["price"] or "",
                e["kill_score"] or "",
                c,
                e["r_net"] or "",
                e["r"] if e["executed"] else "",
                note,
            )
        table.add_row(
            "",
            t["end_time"],
            "trade",
            "",
            "",
            "",
            f"{t['hours']}h",
            "",
            t["r"],
            f"hold {t['hold_r']} · SL/TP {t['baseline_r']}",
            end_section=True,
        )
    console.print(table)
