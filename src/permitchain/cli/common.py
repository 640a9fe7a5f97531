"""What every command needs: settings, a Redis client, a console, clean errors."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import redis.exceptions
import typer
from rich.console import Console
from rich.markup import escape

from permitchain.chain import up_lock_file, url_file
from permitchain.contract.errors import ConfigError, PermitchainError, WrongTypeError
from permitchain.contract.keys import Keys
from permitchain.contract.reasons import WRONG_KEY_TYPE
from permitchain.contract.settings import Settings, load_settings
from permitchain.lifecycle import UpLock
from permitchain.store import (
    REDIS_FAULTS,
    AsyncRedis,
    async_client,
    is_wrong_type,
    shown_url,
    sync_client,
)

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped
T = TypeVar("T")


#: Exit code of a usage, start-up or Redis fault (a service exiting with it is not restarted).
START_FAULT = 2


def fail(msg: str, code: int = START_FAULT) -> NoReturn:
    """One line on stderr (never wrapped), then exit ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def ping_redis(url: str) -> None:
    """Refuse to start against a server that does not answer (one line naming REDIS_URL)."""
    try:
        client = sync_client(url)
        try:
            client.ping()
        finally:
            client.close()
    except REDIS_FAULTS as e:
        raise ConfigError(f"REDIS_URL: no answer from {shown_url(url)} ({e})") from None


def settings(env_files: list[Path] | None = None) -> Settings:
    """The settings from the environment, read strictly from ``env_files`` first if given."""
    try:
        return load_settings(env_file=env_files or None)
    except ConfigError as e:
        fail(f"configuration: {e}")


def redis_url(s: Settings) -> str:
    """REDIS_URL, else the URL a running `permitchain up` left behind."""
    if s.redis_url:
        return s.redis_url
    f = url_file()
    if f.exists() and UpLock(up_lock_file()).held_elsewhere():
        return f.read_text().strip()
    fail("REDIS_URL is not set and no `permitchain up` is running on this machine")


def operator() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return "unknown"


def run_async(fn: Callable[[AsyncRedis, Keys, Settings], Awaitable[T]]) -> T:
    """Run one async command body with a client; Redis faults become a clean error."""
    s = settings()
    url = redis_url(s)

    async def main() -> T:
        r = async_client(url, max_connections=8)
        try:
            return await fn(r, s.keys, s)
        finally:
            await r.aclose()

    try:
        return asyncio.run(main())
    except REDIS_FAULTS as e:
        fail(f"redis at {url}: {e}")
    except WrongTypeError as e:
        fail(f"{WRONG_KEY_TYPE}: {e}")
    except PermitchainError as e:
        fail(str(e))
    except redis.exceptions.ResponseError as e:  # a key of the wrong type not named above
        if not is_wrong_type(e):
            raise
        fail(f"{WRONG_KEY_TYPE}: {e}")
