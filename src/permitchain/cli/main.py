"""``permitchain``: run the chain, drive it, look inside it."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from permitchain import __version__
from permitchain.cli import bench as bench_cmd
from permitchain.cli import control, inspect, keys_cmd
from permitchain.cli import propose as propose_cmd
from permitchain.cli import replay as replay_cmd
from permitchain.cli import security as security_cmd
from permitchain.cli.common import console, fail, operator, run_async, settings
from permitchain.contract.errors import ConfigError, PermitchainError
from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal, parse_decimal
from permitchain.contract.settings import Settings
from permitchain.contract.trading_state import TradingState
from permitchain.exchange.sim import SimExchange
from permitchain.lifecycle import supervisor_fd
from permitchain.ops import actions
from permitchain.runtime.logs import setup_logging
from permitchain.runtime.service import run_service
from permitchain.services import RUNNABLE, build, check_startup
from permitchain.store import AsyncRedis

app = typer.Typer(
    help="permitchain: a fail-closed execution gate for automated crypto-futures exits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sim_app = typer.Typer(
    help="Drive the simulated exchange (positions, prices, faults).", no_args_is_help=True
)
app.add_typer(sim_app, name="sim")
inspect.register(app)
replay_cmd.register(app)


def _dec(value: str, name: str) -> Decimal:
    """A command-line decimal (the contract's parser); unreadable: the command fails, naming it."""
    try:
        return parse_decimal(value, name)
    except ValueError as e:
        fail(str(e))


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


EnvFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--env-file",
        help="Read settings from this file (repeatable; later files win; the environment "
        "wins over files). Every name in it must be a setting.",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """permitchain: a fail-closed execution gate for automated crypto-futures exits."""


@app.command()
def run(
    service: Annotated[str, typer.Argument(help=", ".join(RUNNABLE))],
    env_file: EnvFiles = None,
) -> None:
    """Run one service in the foreground (what the systemd units call)."""
    if service not in RUNNABLE:
        fail(f"unknown service {service!r}; one of: {', '.join(RUNNABLE)}")
    s = settings(env_file)
    setup_logging(s.log_format, s.log_level, service)
    try:
        check_startup(s, service)
        if not s.redis_url:
            raise ConfigError("REDIS_URL: not set (`permitchain up` starts a server for you)")
        run_service(lambda: build(service, s), parent_fd=supervisor_fd())
    except ConfigError as e:  # every start-up fault: one line naming the setting, exit 2
        fail(f"{service}: {e}")


@app.command()
def up(env_file: EnvFiles = None) -> None:
    """Run every service (embedded server unless REDIS_URL is set); Ctrl-C stops them."""
    from permitchain.cli.up import run_up  # noqa: PLC0415 - only for this command

    raise typer.Exit(run_up(env_file))


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option(help="Leave services and server running at the end")
    ] = False,
    logs: Annotated[
        Path | None, typer.Option(help="Keep the services' logs in this folder")
    ] = None,
) -> None:
    """Run the reference scenario (docs/design.md §8) start to end and print each step, on its own
    embedded server and key prefix (never REDIS_URL)."""
    from permitchain.cli.demo import run_demo  # noqa: PLC0415 - heavy, only for this command

    sys.exit(run_demo(keep=keep, logs=logs))


@app.command()
def reconcile(
    symbol: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change")] = False,
    reason: Annotated[str, typer.Option(help="Why (goes to the audit stream)")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Even while a close P3.3 allowed is in flight")
    ] = False,
) -> None:
    """Set P3.3's ledger to the exchange's position on purpose (audited; new epoch)."""

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> dict[str, Any]:
        try:
            return await actions.reconcile_symbol(
                r, k, s, symbol, operator=operator(), reason=reason, dry_run=dry_run, force=force
            )
        except actions.InFlight as e:
            return e.preview

    ch = run_async(body)
    verb = "would set" if ch["dry_run"] else "set"
    console.print(
        f"reconcile {symbol}: {verb} ledger {ch['ledger_before']} → "
        f"{ch['ledger_after']} (exchange {ch['exchange_amt']}, diff {ch['diff']}), "
        f"epoch {ch['epoch_before']} → {ch['epoch_after']}"
    )
    if ch["in_flight_plan"]:
        msg = (
            f"plan {ch['in_flight_plan']} is in flight for {symbol}: its fill may not be on "
            "the exchange or the ledger yet"
        )
        if not dry_run and not force:
            fail(f"{msg}; nothing changed. Wait for its result (COOLDOWN_S) or pass --force")
        console.print(f"[yellow]warning:[/] {msg}")


def _set_state(state: TradingState, reason: str) -> None:
    async def body(r: AsyncRedis, k: Keys, s: Settings) -> tuple[TradingState, TradingState]:
        return await control.set_trading_state(r, k, s, state, reason=reason, operator=operator())

    before, after = run_async(body)
    why = escape(control.clean_reason(reason))
    console.print(
        f"trading state {before.value} → [bold]{after.value}[/] ({why}); "
        "recorded in the audit stream"
    )
    if after is not TradingState.ACTIVE:
        console.print('undo with: permitchain resume --reason "…"')


ReasonOpt = Annotated[str, typer.Option(help="Why (recorded in the audit stream with your name)")]


@app.command()
def halt(reason: ReasonOpt = "") -> None:
    """HALTED: every plan is denied (`trading_halted`) and no order is sent, until `resume`."""
    _set_state(TradingState.HALTED, reason)


@app.command("reduce")
def reduce_(reason: ReasonOpt = "") -> None:
    """REDUCING: only reduce-only plans pass (all of ours are); `resume` to undo."""
    _set_state(TradingState.REDUCING, reason)


@app.command()
def resume(reason: ReasonOpt = "") -> None:
    """ACTIVE again: plans are judged by the policy as usual."""
    _set_state(TradingState.ACTIVE, reason)


# -- sim ------------------------------------------------------------------------------------
def _sim(fn: Any) -> Any:
    async def body(r: AsyncRedis, k: Keys, s: Settings) -> Any:
        return await fn(SimExchange(r, k))

    return run_async(body)


# A negative amount (a short) is an argument, not an option: `set-position BTCUSDT -0.063`.
@sim_app.command("set-position", context_settings={"ignore_unknown_options": True})
def sim_set_position(
    symbol: str,
    amt: str,
    entry: Annotated[str | None, typer.Option()] = None,
    step: Annotated[str | None, typer.Option()] = None,
    min_qty: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Set the signed position (negative = short), optionally entry price and filters."""
    a, e = _dec(amt, "amt"), _dec(entry, "entry") if entry else None
    filters = {k: v for k, v in (("step_size", step), ("min_qty", min_qty)) if v}

    async def fn(sim: SimExchange) -> None:
        await sim.list_symbol(symbol, **filters)
        await sim.set_position(symbol, a, e)

    _sim(fn)
    console.print(f"sim {symbol}: position {fmt_decimal(a)}" + (f" entry {entry}" if entry else ""))


@sim_app.command("set-price")
def sim_set_price(symbol: str, price: str) -> None:
    """Set the mark price."""
    p = _dec(price, "price")
    _sim(lambda sim: sim.set_price(symbol, p))
    console.print(f"sim {symbol}: mark price {fmt_decimal(p)}")


@sim_app.command("fault")
def sim_fault(
    order_mode: Annotated[
        str | None, typer.Option(help="fill|new|reject|lose_response|timeout")
    ] = None,
    fetch_fail: Annotated[bool | None, typer.Option(help="Position reads fail")] = None,
    latency_ms: Annotated[int | None, typer.Option()] = None,
    clear: Annotated[bool, typer.Option("--clear")] = False,
) -> None:
    """Inject exchange faults (or --clear them)."""
    cfg = {}
    if order_mode is not None:
        if order_mode not in ("fill", "new", "reject", "lose_response", "timeout"):
            fail(f"--order-mode: unknown mode {order_mode!r}")
        cfg["order_mode"] = order_mode
    if fetch_fail is not None:
        cfg["fetch_fail"] = "1" if fetch_fail else "0"
    if latency_ms is not None:
        cfg["latency_ms"] = str(latency_ms)
    _sim(lambda sim: sim.clear_faults() if clear else sim.set_fault(**cfg))
    console.print("sim faults cleared" if clear else f"sim faults: {cfg}")


@sim_app.command("order")
def sim_order(
    symbol: str,
    side: Annotated[str, typer.Argument(help="BUY|SELL")],
    qty: str,
    client_order_id: Annotated[str, typer.Option(help="The gate's client order id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A reduce-only market order on the simulated exchange (a bot's own order, placed
    through the gate against `permitchain up`; docs/integrations.md)."""
    if side not in ("BUY", "SELL"):
        fail(f"side: BUY or SELL, got {side!r}")
    q = _dec(qty, "qty")

    async def fn(sim: SimExchange) -> Any:
        return await sim.place_reduce_only_market(
            symbol, "BUY" if side == "BUY" else "SELL", q, client_order_id
        )

    try:
        o = _sim(fn)
    except PermitchainError as e:
        fail(f"sim order: {e}")
    row = {
        "symbol": o.symbol,
        "side": o.side,
        "client_order_id": o.client_order_id,
        "order_id": o.order_id,
        "status": o.status.value,
        "filled_qty": fmt_decimal(o.filled_qty),
        "avg_price": "" if o.avg_price is None else fmt_decimal(o.avg_price),
    }
    if as_json:
        print(json.dumps(row))
        return
    console.print(
        f"sim {symbol}: {side} {fmt_decimal(q)} reduce-only, client order id "
        f"{client_order_id}: {row['status']} order {row['order_id']} filled "
        f"{row['filled_qty']} avg {row['avg_price'] or '-'}"
    )


@sim_app.command("show")
def sim_show(symbol: Annotated[str | None, typer.Argument()] = None) -> None:
    """Positions, prices and filters on the simulated exchange."""

    async def fn(sim: SimExchange) -> tuple[Any, Any]:
        syms = [symbol] if symbol else await sim.symbols()
        return await sim.fetch_positions(syms), await sim.filters(syms)

    positions, filters = _sim(fn)
    t = Table(title="simulated exchange")
    for col in ("symbol", "position", "entry", "mark", "step", "min qty"):
        t.add_column(col)
    for sym, p in sorted(positions.items()):
        f = filters.get(sym)
        t.add_row(
            sym,
            fmt_decimal(p.amt),
            fmt_decimal(p.entry_price),
            fmt_decimal(p.mark_price),
            fmt_decimal(f.step_size) if f else "-",
            fmt_decimal(f.min_qty) if f else "-",
        )
    console.print(t)


app.command("bench")(bench_cmd.bench)
# public-key permits and the operator's emergency exit (docs/design.md §13)
app.add_typer(keys_cmd.keys_app, name="keys")
app.command("flatten")(keys_cmd.flatten_cmd)
app.command()(propose_cmd.propose)
app.command("acl")(security_cmd.acl)


def main() -> None:
    app()
