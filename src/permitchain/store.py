"""Redis clients. The one place redis-py exceptions become :class:`StoreError`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from permitchain.errors import ConfigError, StoreError

#: Our clients always decode replies to ``str``. redis-py's stubs cannot see that
#: (``decode_responses=True``): they type every reply ``bytes | str`` and every asyncio
#: method ``Awaitable[T] | T``. Rather than casts and ignores on every call, the client is
#: typed ``Any`` here, at the one boundary where it is built.
AsyncRedis: TypeAlias = Any
SyncRedis: TypeAlias = Any

#: redis-py exceptions that mean "the store failed", as opposed to a bug in our command.
REDIS_FAULTS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    ConnectionError,
    OSError,
)


def _client_kwargs() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 15,
    }


def _require(url: str | None) -> str:
    if not url:
        raise ConfigError("REDIS_URL: not set (services need a server; `up` starts one)")
    return url


def async_client(url: str | None, *, max_connections: int = 32) -> AsyncRedis:
    """An asyncio client with a bounded pool; every service uses one for its life."""
    return aioredis.Redis.from_url(
        _require(url),
        max_connections=max_connections,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2),
        **_client_kwargs(),
    )


def sync_client(url: str | None) -> SyncRedis:
    """A blocking client for the CLI."""
    return redis.Redis.from_url(
        _require(url),
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2),
        **_client_kwargs(),
    )


@contextlib.contextmanager
def translate() -> Iterator[None]:
    """Turn redis-py faults into :class:`StoreError` (sync code)."""
    try:
        yield
    except REDIS_FAULTS as e:
        raise StoreError(f"redis: {type(e).__name__}: {e}") from e


@contextlib.asynccontextmanager
async def atranslate() -> AsyncIterator[None]:
    """Turn redis-py faults into :class:`StoreError` (async code)."""
    try:
        yield
    except REDIS_FAULTS as e:
        raise StoreError(f"redis: {type(e).__name__}: {e}") from e
