"""``permitchain``: run the chain, drive it, look inside it."""

from __future__ import annotations

import signal
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from redis.asyncio import Redis
from rich.markup import escape
from rich.table import Table

from permitchain import __version__
from permitchain.chain import Chain, url_file
from permitchain.cli import bench as bench_cmd
from permitchain.cli import control, inspect
from permitchain.cli import replay as replay_cmd
from permitchain.cli import security as security_cmd
from permitchain.cli.common import console, fail, operator, run_async, settings
from permitchain.errors import ConfigError
from permitchain.exchange.factory import make_exchange
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.api import current_epoch, new_proposal_id, submit_proposal
from permitchain.governor.policy import TradingState
from permitchain.keys import Keys
from permitchain.models import Proposal, fmt_decimal
from permitchain.position_brain.state import reconcile as reconcile_ledger
from permitchain.runtime.logs import setup_logging
from permitchain.runtime.service import run_service
from permitchain.services import SERVICE_NAMES, build, check_startup
from permitchain.settings import Settings

app = typer.Typer(
    help="permitchain: a fail-closed execution gate for automated crypto-futures exits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sim_app = typer.Typer(help="Drive the simulated exchange (positions, prices, faults).",
                      no_args_is_help=True)  # fmt: skip
app.add_typer(sim_app, name="sim")
inspect.register(app)
replay_cmd.register(app)


def _dec(value: str, name: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        fail(f"{name}: not a decimal: {value!r}")
    if not d.is_finite():
        fail(f"{name}: not finite: {value!r}")
    return d


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def run(service: Annotated[str, typer.Argument(help=", ".join(SERVICE_NAMES))]) -> None:
    """Run one service in the foreground (what the systemd units call)."""
    if service not in SERVICE_NAMES:
        fail(f"unknown service {service!r}; one of: {', '.join(SERVICE_NAMES)}")
    s = settings()
    setup_logging(s.log_format, s.log_level, service)
    try:
        check_startup(s)
        if not s.redis_url:
            raise ConfigError("REDIS_URL: not set (`permitchain up` starts a server for you)")
    except ConfigError as e:
        fail(f"configuration: {e}")
    run_service(lambda: build(service, s))


@app.command()
def up() -> None:
    """Run every service (embedded server unless REDIS_URL is set); Ctrl-C stops them."""
    s = settings()
    try:
        check_startup(s)
    except ConfigError as e:
        fail(f"configuration: {e}")
    if s.metrics_port not in (None, 0):
        fail("METRICS_PORT: `up` runs four services; leave it unset (defaults 8042-8045) or 0")
    chain = Chain()
    url = chain.ensure_redis()
    where = f"embedded {chain.server.name} at {url}" if chain.server else url
    console.print(f"[bold]permitchain {__version__}[/] · redis: {where} · mode "
                  f"{s.apply_mode.value} · exchange {s.exchange.value}")  # fmt: skip
    if chain.server:
        url_file().write_text(url)
        console.print(f"other terminals: [cyan]export REDIS_URL={url}[/] (or just run commands: "
                      "they find this server)")  # fmt: skip
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    restarts: dict[str, list[float]] = {n: [] for n in SERVICE_NAMES}
    try:
        chain.start()
        chain.wait_ready()
        console.print(f"[green]up[/]: {', '.join(SERVICE_NAMES)} (Ctrl-C to stop)")
        while not stopping:
            time.sleep(0.5)
            for name, proc in list(chain.procs.items()):
                if proc.poll() is None or stopping:
                    continue
                recent = [t for t in restarts[name] if time.monotonic() - t < 60]
                if len(recent) >= 5:
                    console.print(f"[red]{name} keeps exiting ({proc.returncode}); stopping[/]")
                    stopping = True
                    break
                console.print(f"[yellow]{name} exited with {proc.returncode}; restarting[/]")
                restarts[name] = [*recent, time.monotonic()]
                chain.start_service(name)
    finally:
        console.print("stopping services…")
        chain.stop()
        if chain.server is None and url_file().exists() and url_file().read_text() == url:
            url_file().unlink()
        elif chain.server is None:
            url_file().unlink(missing_ok=True)


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option(help="Leave services and server running at the end")
    ] = False,
) -> None:
    """Run the reference scenario (DESIGN.md §8) start to end and print each step."""
    from permitchain.cli.demo import run_demo  # noqa: PLC0415 - heavy, only for this command

    sys.exit(run_demo(keep=keep))


@app.command()
def propose(
    symbol: str,
    action: Annotated[
        str,
        typer.Option(help="PARTIAL_25|PARTIAL_50|PARTIAL_75|FULL_CLOSE_PROPOSED|UPDATE_SL|HOLD"),
    ],
    kill_score: Annotated[str, typer.Option()] = "0.6",
    new_sl: Annotated[str | None, typer.Option()] = None,
    r_net: Annotated[str | None, typer.Option()] = None,
    tranche: Annotated[int, typer.Option()] = 0,
    epoch: Annotated[int | None, typer.Option(help="Position epoch (default: P3.3's)")] = None,
    source: Annotated[str, typer.Option()] = "cli",
) -> None:
    """Hand an exit decision to the chain (same checks as the exit brain's own)."""

    async def body(r: Redis, k: Keys, s: Settings) -> tuple[Proposal, str]:
        ep = epoch if epoch is not None else await current_epoch(r, k, symbol)
        fields = {
            "schema": "1", "proposal_id": new_proposal_id(), "symbol": symbol, "action": action,
            "kill_score": kill_score, "new_sl": new_sl or "", "r_net": r_net or "",
            "position_epoch": str(ep), "tranche": str(tranche), "ts_epoch": f"{time.time():.6f}",
            "source": source,
        }  # fmt: skip
        p = Proposal.from_fields(fields)
        return p, await submit_proposal(r, k, p, ttl_s=s.proposal_ttl_s)

    p, entry = run_async(body)
    console.print(
        f"proposal {p.proposal_id} {p.symbol} {p.action} kill_score "
        f"{p.kill_score} epoch {p.position_epoch} tranche {p.tranche} → {entry}"
    )


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

    async def body(r: Redis, k: Keys, s: Settings) -> dict[str, Any]:
        ex = make_exchange(s, r, k)
        try:
            known = await ex.filters([symbol])
            positions = await ex.fetch_positions([symbol])
        finally:
            await ex.close()
        if symbol not in known and symbol not in positions:
            fail(f"{symbol}: the exchange reports no such symbol")
        amt = positions[symbol].amt if symbol in positions else Decimal(0)
        preview = await reconcile_ledger(r, k, symbol, amt, operator=operator(), note=reason,
                                         dry_run=True)  # fmt: skip
        if dry_run or (preview["in_flight_plan"] and not force):
            return preview
        return await reconcile_ledger(r, k, symbol, amt, operator=operator(), note=reason)

    ch = run_async(body)
    verb = "would set" if ch["dry_run"] else "set"
    console.print(f"reconcile {symbol}: {verb} ledger {ch['ledger_before']} → "
                  f"{ch['ledger_after']} (exchange {ch['exchange_amt']}, diff {ch['diff']}), "
                  f"epoch {ch['epoch_before']} → {ch['epoch_after']}")  # fmt: skip
    if ch["in_flight_plan"]:
        msg = (f"plan {ch['in_flight_plan']} is in flight for {symbol}: its fill may not be on "
               "the exchange or the ledger yet")  # fmt: skip
        if not dry_run and not force:
            fail(f"{msg}; nothing changed. Wait for its result (COOLDOWN_S) or pass --force")
        console.print(f"[yellow]warning:[/] {msg}")


def _set_state(state: TradingState, reason: str) -> None:
    async def body(r: Redis, k: Keys, s: Settings) -> tuple[TradingState, TradingState]:
        return await control.set_trading_state(r, k, s, state, reason=reason, operator=operator())

    before, after = run_async(body)
    why = escape(control.clean_reason(reason))
    console.print(f"trading state {before.value} → [bold]{after.value}[/] ({why}); "
                  "recorded in the audit stream")  # fmt: skip
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
    async def body(r: Redis, k: Keys, s: Settings) -> Any:
        return await fn(SimExchange(r, k))

    return run_async(body)


@sim_app.command("set-position")
def sim_set_position(symbol: str, amt: str, entry: Annotated[str | None, typer.Option()] = None,
                     step: Annotated[str | None, typer.Option()] = None,
                     min_qty: Annotated[str | None, typer.Option()] = None) -> None:  # fmt: skip
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
app.command("acl")(security_cmd.acl)


def main() -> None:
    app()
