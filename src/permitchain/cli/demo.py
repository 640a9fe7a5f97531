"""``permitchain demo``: the reference scenario, start to end, printed step by step."""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.panel import Panel
from rich.table import Table

from permitchain.chain import Chain
from permitchain.cli.common import console, settings
from permitchain.cli.keys_cmd import ephemeral_keys
from permitchain.scenario import SYMBOL, run_reference

DEMO_ENV = {"APPLY_MODE": "testnet", "EXCHANGE": "sim", "METRICS_PORT": "0",
            "LOG_LEVEL": "WARNING", "POLL_INTERVAL_S": "1",
            "SIM_DRIVE_PRICES": "false"}  # fmt: skip


def _kv(d: dict[str, Any], title: str, keys: list[str] | None = None) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="cyan")
    t.add_column()
    for k in keys or list(d):
        if k in d:
            v = d[k]
            t.add_row(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
    return t


def emit(name: str, d: dict[str, Any]) -> None:
    c = console
    if name == "state":
        c.print(
            f"[bold]1. state[/]  exchange {SYMBOL} {d['exchange_amt']} @ mark "
            f"{d['mark_price']} (step {d['step_size']}) · P3.3 ledger {d['ledger_amt']}"
        )
    elif name in ("proposal", "proposal_second"):
        p = d["proposal"]
        n = "2" if name == "proposal" else "6"
        c.print(
            f"\n[bold]{n}. exit brain[/] kill_score = sigmoid(1.0·{p['k_regime_flip']} + "
            f"0.5·{p['k_sigma_spike']} + 0.5·{p['k_ts_drop']} + 0.3·{p['k_age_penalty']}) = "
            f"[bold]{Decimal(p['kill_score']):.4f}[/]; R_net {p['r_net']} → "
            f"[bold]{p['action']}[/], "
            f"new SL {p['new_sl']} (epoch {p['position_epoch']}, tranche {p['tranche']})"
        )
        c.print(f"   plan_id {d['plan_id']} = sha256(symbol|action|epoch|tranche)[:16]")
    elif name in ("permits_first", "permits_second"):
        c.print(f"\n[bold]{'3' if name == 'permits_first' else '7'}. permits[/]")
        for layer, permit in d.items():
            c.print(_kv(permit, f"   {layer} permit"))
    elif name == "first_result":
        c.print(
            Panel(
                f"executor BLOCKED plan {d['plan_id']}: reason [bold red]{d['reason']}[/] "
                f"({d['p33_reason']}); executed={d['executed']}, no order",
                title="4. first plan",
                border_style="red",
            )
        )
    elif name == "reconcile":
        c.print(
            f"\n[bold]5. permitchain reconcile {SYMBOL}[/]: ledger {d['ledger_before']} → "
            f"{d['ledger_after']} (exchange {d['exchange_amt']}), epoch {d['epoch_before']} "
            f"→ {d['epoch_after']}, audited"
        )
    elif name == "order":
        o = d["order"] or {}
        c.print(
            f"\n[bold]8. order[/] {o.get('type')} {o.get('side')} {o.get('requested_qty')} "
            f"reduce_only={o.get('reduce_only')} client_order_id={o.get('client_order_id')} "
            f"status={o.get('status')} avg_price={o.get('avg_price')}"
        )
    elif name == "second_result":
        c.print(
            Panel(
                f"plan {d['plan_id']}: status [bold green]{d['status']}[/] filled "
                f"{d['filled_qty']} of {d['requested_qty']} {d['side']} reduce_only="
                f"{d['reduce_only']}; permit wait {d['permit_wait_ms']} ms; chain "
                f"{d['chain_latency_ms']} ms",
                title="9. result",
                border_style="green",
            )
        )
    elif name == "ledger":
        c.print(
            f"[bold]10. ledger[/] {SYMBOL}: {d.get('last_known_amt')} "
            f"({d.get('last_known_side')}), last order {d.get('last_order_id')}"
        )


def run_demo(*, keep: bool = False) -> int:
    s = settings()
    log_dir = Path(tempfile.mkdtemp(prefix="permitchain-demo-"))
    chain = Chain({**DEMO_ENV, "KEY_PREFIX": s.key_prefix}, redis_url=s.redis_url,
                  log_dir=log_dir)  # fmt: skip
    url = chain.ensure_redis()
    console.print(
        f"[bold]permitchain demo[/]: reference scenario (docs/design.md §8) · redis "
        f"{'embedded ' + chain.server.name + ' at ' if chain.server else ''}{url} · "
        f"service logs in {log_dir}"
    )
    ephemeral_keys(chain, s, log_dir / "keys")

    def ready() -> None:
        console.print("services up: exit-brain, apply-layer, governor, position-brain "
                      "(separate processes)\n")  # fmt: skip

    try:
        ok = run_reference(chain, url, emit=emit, on_ready=ready).ok()
    except (TimeoutError, RuntimeError) as e:  # a step never came, or a service died
        console.print(f"\n[bold red]{e}[/] (service logs in {log_dir})")
        ok = False
    finally:
        if not keep:
            chain.stop()
    console.print(
        "\n[bold green]demo OK[/]: blocked on the P3.3 deny, then one reduce-only "
        "close of 0.046, ledger 0.016"
        if ok
        else "\n[bold red]demo FAILED[/]"
    )
    return 0 if ok else 1
