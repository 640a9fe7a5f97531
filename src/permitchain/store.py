"""Redis clients. The one place redis-py exceptions become :class:`StoreError`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from permitchain.errors import ConfigError, StoreError
from permitchain.lean import lean_client

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


#: Longest a command waits for a free pooled connection before it fails (a store fault).
POOL_WAIT_S = 5.0


def _client_kwargs() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 15,
    }


class _SentinelRedis(aioredis.Redis):
    """A master client that also closes its sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for s in getattr(manager, "sentinels", []):
            await s.aclose()


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``redis+sentinel://[user:password@]host:port[,host:port…]/service_name[/db]``."""
    rest = url.removeprefix("redis+sentinel://")
    auth, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts:
        raise ConfigError(
            "REDIS_URL: sentinel URLs are redis+sentinel://host:port[,…]/service[/db]"
        )
    nodes = []
    for h in hosts.split(","):
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_URL: bad sentinel address {h!r} (host:port)")
        nodes.append((host, int(port)))
    kw: dict[str, Any] = {"db": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0}
    if auth:
        user, sep, password = auth.partition(":")
        kw.update(username=user or None, password=password if sep else user)
        if not sep:
            kw["username"] = None
    return nodes, parts[0], kw


def _require(url: str | None) -> str:
    if not url:
        raise ConfigError("REDIS_URL: not set (services need a server; `up` starts one)")
    return url


def async_client(url: str | None, *, max_connections: int = 32) -> AsyncRedis:
    """An asyncio client with a bounded pool; every service uses one for its life.
    ``redis+sentinel://`` URLs give a client that follows the master through failovers."""
    url = _require(url)
    if url.startswith("redis+sentinel://"):
        nodes, service, kw = parse_sentinel_url(url)
        sentinel = aiosentinel.Sentinel(nodes, socket_connect_timeout=2.0)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service, redis_class=_SentinelRedis,
                                   max_connections=max_connections,
                                   **kw, **_client_kwargs())  # fmt: skip
    # A blocking pool: when every connection is busy a command waits for one (bounded by
    # POOL_WAIT_S) instead of failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2),
        **_client_kwargs(),
    )
    # The client owns the pool (aclose() closes it); non-blocking commands take the lean
    # transport (permitchain.lean: one pipelined connection, hiredis), the rest the pool.
    return lean_client(pool)


def sync_client(url: str | None) -> SyncRedis:
    """A blocking client for the CLI."""
    url = _require(url)
    if url.startswith("redis+sentinel://"):
        nodes, service, kw = parse_sentinel_url(url)
        s = redis.sentinel.Sentinel(nodes, socket_connect_timeout=2.0)  # type: ignore[no-untyped-call]
        return s.master_for(  # type: ignore[no-untyped-call]
            service, **kw, **_client_kwargs()
        )
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
