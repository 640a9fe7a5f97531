"""``permitchain demo``: the reference scenario, start to end, printed step by step.

The demo never reads ``REDIS_URL`` nor any env file: it always starts its own embedded server
and uses its own key prefix (``DEMO_PREFIX``), so it cannot touch a live ledger or join live
consumer groups, whatever the environment holds. The services' logs go to a temporary
folder removed at the end (printed when the demo fails), or to ``--logs DIR``, kept.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from permitchain.chain import Chain
from permitchain.cli.common import console
from permitchain.cli.keys_cmd import ephemeral_keys
from permitchain.contract.models import iso_utc
from permitchain.contract.settings import load_settings
from permitchain.scenario import SYMBOL, run_reference

DEMO_PREFIX = "pcdemo"
#: The services' settings: the demo's own, whatever the environment says (an empty
#: PERMITCHAIN_ENV_FILE reads no file; REDIS_URL is set to the demo's server).
DEMO_ENV = {
    "APPLY_MODE": "testnet",
    "EXCHANGE": "sim",
    "METRICS_PORT": "0",
    "LOG_LEVEL": "INFO",
    "POLL_INTERVAL_S": "1",
    "SIM_DRIVE_PRICES": "false",
    "KEY_PREFIX": DEMO_PREFIX,
    "PERMITCHAIN_ENV_FILE": "",
}
LOG_TAIL_LINES = 15
#: Epoch-second fields of permits and results, shown as ISO UTC times.
TIME_FIELDS = ("created_at", "expires_at", "ts", "last_update_ts")


def _kv(d: dict[str, Any], title: str, keys: list[str] | None = None) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="cyan")
    t.add_column()
    for k in keys or list(d):
        if k in d:
            v = d[k]
            if k in TIME_FIELDS and isinstance(v, int | float | str):
                v = iso_utc(float(v))
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


def run_demo(*, keep: bool = False, logs: Path | None = None) -> int:
    temp = None if logs is not None else Path(tempfile.mkdtemp(prefix="permitchain-demo-"))
    log_dir = logs if logs is not None else temp
    assert log_dir is not None
    keys_dir = Path(tempfile.mkdtemp(prefix="permitchain-demo-keys-"))
    chain = Chain(
        DEMO_ENV, redis_url=None, log_dir=log_dir, supervise=not keep, die_with_parent=not keep
    )
    try:
        url = chain.ensure_redis()
        assert chain.server is not None
        console.print(
            f"[bold]permitchain demo[/]: reference scenario (docs/design.md §8) · its own embedded "
            f"{chain.server.name} at {url}, key prefix {DEMO_PREFIX} (REDIS_URL is never used) · "
            + (f"service logs in {logs}" if logs else "service logs kept with --logs DIR"),
            soft_wrap=True,
        )
        # the demo's own keys: nothing of this machine's environment is read
        ephemeral_keys(chain, load_settings({}), keys_dir)

        def ready() -> None:
            console.print(
                "services up: exit-brain, apply-layer, governor, position-brain "
                "(separate processes)\n"
            )

        try:
            ok = run_reference(chain, url, emit=emit, on_ready=ready).ok()
        except (TimeoutError, RuntimeError) as e:  # a step never came, or a service died
            console.print(f"\n[bold red]{e}[/]")
            ok = False
        if not ok:
            _print_log_tails(log_dir)
    finally:
        if not keep:
            chain.stop()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        if not keep:
            shutil.rmtree(keys_dir, ignore_errors=True)
    if keep:
        console.print(
            f"kept running (--keep): export REDIS_URL={chain.redis_url} KEY_PREFIX={DEMO_PREFIX}"
        )
    console.print(
        "\n[bold green]demo OK[/]: blocked on the P3.3 deny, then one reduce-only "
        "close of 0.046, ledger 0.016"
        if ok
        else "\n[bold red]demo FAILED[/]"
    )
    return 0 if ok else 1


def _print_log_tails(log_dir: Path) -> None:
    """The last lines of each service's log (the folder itself is removed at the end)."""
    for path in sorted(log_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        console.print(f"[bold]{path.stem}[/] (last {len(lines)} lines):", highlight=False)
        for line in lines:
            console.print(f"  {escape(line)}", soft_wrap=True, highlight=False)
