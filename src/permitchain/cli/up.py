"""``permitchain up``: every service as a child process, on ``REDIS_URL`` or an embedded
server, until Ctrl-C.

One per user: ``up`` holds a lock (``lifecycle.UpLock``) for its whole life; a second one
refuses in one line and leaves the first (and its discovery file) alone. The children die
with it, even on SIGKILL (``lifecycle``). A service that exits with the start-up fault code
(2) has printed its one-line reason: ``up`` stops everything and exits 2 rather than
restarting it; any other exit is restarted (at most 5 times a minute). The console (not on
the order path) starts after the chain; if it cannot start or keeps exiting, the chain runs on
without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from permitchain import __version__
from permitchain.chain import Chain, ephemeral_keys_dir, up_lock_file, url_file
from permitchain.cli.common import START_FAULT, console, err_console, fail, ping_redis, settings
from permitchain.cli.keys_cmd import ephemeral_keys
from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import ENV_FILE_VARIABLE, Settings
from permitchain.lifecycle import UpLock, UpLockHeld
from permitchain.services import CONSOLE, RUNNABLE, SERVICE_NAMES, check_startup
from permitchain.store import shown_url

MAX_RESTARTS_PER_MIN = 5


def run_up(env_files: list[Path] | None = None) -> int:
    s = settings(env_files)
    if env_files:  # the services read the same files, as strictly
        os.environ[ENV_FILE_VARIABLE] = os.pathsep.join(str(f) for f in env_files)
    try:
        check_startup(s)
    except ConfigError as e:
        fail(f"configuration: {e}")
    if s.metrics_port not in (None, 0):
        fail("METRICS_PORT: `up` runs five services: leave it unset (8042-8045, 8047) or 0")
    lock = UpLock(up_lock_file())
    try:
        lock.acquire()
    except UpLockHeld as held:
        fail(f"another `permitchain up` is running (pid {held.pid}); stop it first")
    try:
        url_file().unlink(missing_ok=True)  # we hold the lock: a file left here is stale
        chain = Chain(
            {"KEY_PREFIX": s.key_prefix, "STREAM_SHARDS": str(s.stream_shards)},
            redis_url=s.redis_url,
            die_with_parent=True,
        )
        try:
            url = chain.ensure_redis()
            ping_redis(url)
        except ConfigError as e:
            chain.stop()
            fail(str(e))
        if chain.server is not None:
            where = f"embedded {chain.server.name} at {url} (REDIS_URL is not set)"
        else:
            where = f"REDIS_URL {shown_url(url)}"
        console.print(
            f"[bold]permitchain {__version__}[/] · redis: {where} · mode "
            f"{s.apply_mode.value} · exchange {s.exchange.value}",
            soft_wrap=True,
        )
        if chain.server is not None:
            url_file().write_text(url)
            console.print(
                f"other terminals: [cyan]export REDIS_URL={url}[/] (or just run commands: "
                "they find this server)",
                soft_wrap=True,
            )
        keys_made = ephemeral_keys(chain, s, ephemeral_keys_dir())
        try:
            return _supervise(chain, s)
        finally:
            console.print("stopping services…")
            chain.stop()
            url_file().unlink(missing_ok=True)
            if keys_made:
                shutil.rmtree(ephemeral_keys_dir(), ignore_errors=True)
    finally:
        lock.release()


def _supervise(chain: Chain, s: Settings) -> int:
    """Start the services, restart one that exits, until a signal; returns the exit code."""
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    chain.start()
    try:
        chain.wait_ready()
    except (RuntimeError, TimeoutError) as e:
        # A service that exits at start printed its one-line reason above.
        err_console.print(f"[bold red]error:[/] not started: {e}", soft_wrap=True)
        return START_FAULT
    console.print(f"[green]up[/]: {', '.join(SERVICE_NAMES)} (Ctrl-C to stop)")
    start_console(chain, s)
    restarts: dict[str, list[float]] = {n: [] for n in RUNNABLE}
    while not stopping:
        time.sleep(0.5)
        for name, proc in list(chain.procs.items()):
            if proc.poll() is None or stopping:
                continue
            recent = [t for t in restarts[name] if time.monotonic() - t < 60]
            if proc.returncode == START_FAULT or len(recent) >= MAX_RESTARTS_PER_MIN:
                if name == CONSOLE:  # not on the order path: left off, the chain goes on
                    console.print(
                        f"[red]console keeps exiting ({proc.returncode}); left off, "
                        "the chain goes on[/]"
                    )
                    del chain.procs[name]
                    continue
                console.print(f"[red]{name} keeps exiting ({proc.returncode}); stopping[/]")
                return START_FAULT if proc.returncode == START_FAULT else 1
            console.print(f"[yellow]{name} exited with {proc.returncode}; restarting[/]")
            restarts[name] = [*recent, time.monotonic()]
            chain.start_service(name)
    return 0


def start_console(chain: Chain, s: Settings) -> None:
    """The console beside the chain; if it cannot start, the chain runs on without it."""
    from permitchain.console.service import console_url  # noqa: PLC0415 - web stack only here

    chain.start_service(CONSOLE)
    try:
        chain.wait_ready([CONSOLE])
    except (RuntimeError, TimeoutError) as e:
        console.print(f"[yellow]console did not start ({e}); the chain runs without it[/]")
        chain.procs.pop(CONSOLE, None)
        return
    console.print(f"console: [cyan]{console_url(s)}[/]")
