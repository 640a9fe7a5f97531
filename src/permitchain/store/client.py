"""Redis clients. The one place redis-py exceptions become :class:`StoreError`."""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.retry
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.connection
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from permitchain.contract.errors import ConfigError, StoreError, WrongTypeError
from permitchain.store import protocol
from permitchain.store.lean import LeanRedis, lean_client
from permitchain.store.retry import (
    CONNECTION_FAULTS,
    MarksUnsent,
    MarksUnsentSync,
    after_sync,
    no_retry,
    no_retry_sync,
)

#: Our clients always decode replies to ``str``. redis-py's stubs cannot see that
#: (``decode_responses=True``): they type every reply ``bytes | str`` and every asyncio
#: method ``Awaitable[T] | T``. The client is typed by the protocols of
#: :mod:`permitchain.store.protocol` (the commands we send, the shapes we get back): the
#: builders below cast redis-py's object to them once, at the one boundary where it is built.
AsyncRedis = protocol.AsyncRedis
SyncRedis = protocol.SyncRedis

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


#: ``REDIS_TRANSPORT``: the lean transport (:mod:`permitchain.store.lean`) or redis-py's pool.
TRANSPORTS = ("lean", "pool")


def _retry(kind: Any = Retry) -> Any:
    """Two retries with jittered backoff (``kind``: redis-py's sync or asyncio ``Retry``):
    the Cluster clients' (redis-py's rule: it resends after a connection fault)."""
    return kind(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2)


class _Pool(MarksUnsent, aioredis.BlockingConnectionPool):
    """The blocking pool, its checkout failures marked as never sent (store.retry)."""


class _SentinelPool(MarksUnsent, aiosentinel.SentinelConnectionPool):
    """The sentinel-managed pool, its checkout failures marked as never sent (store.retry)."""


def _client_kwargs() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 15,
    }


class _SyncPool(MarksUnsentSync, redis.ConnectionPool):
    """The CLI's pool, its checkout failures marked as never sent (store.retry)."""


class _SyncSentinelPool(MarksUnsentSync, redis.sentinel.SentinelConnectionPool):
    """The CLI's sentinel-managed pool, its checkout failures marked as never sent."""


class _SyncRedis(redis.Redis):
    """The blocking client: redis-py's, its commands sent again only as store.retry allows."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except CONNECTION_FAULTS as e:
            return after_sync(
                e,
                lambda: super(_SyncRedis, self).execute_command(*args, **options),  # type: ignore[no-untyped-call]
                args[:1],
            )


class _SentinelRedis(LeanRedis):
    """A master client (redis-py's transport, store.retry's rule) that also closes its
    sentinel connections."""

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
    kw: dict[str, Any] = {"db": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0}
    return _nodes(hosts, "sentinel address"), parts[0], {**kw, **_auth(auth)}


def _nodes(hosts: str, what: str) -> list[tuple[str, int]]:
    """``host:port[,host:port…]`` of a sentinel or cluster URL."""
    nodes = []
    for h in hosts.split(","):
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"REDIS_URL: bad {what} {h!r} (host:port)")
        nodes.append((host, int(port)))
    return nodes


def _auth(auth: str) -> dict[str, Any]:
    """``user:password`` or ``password`` (the default user) of a URL, as client options."""
    if not auth:
        return {}
    user, sep, password = auth.partition(":")
    return (
        {"username": user or None, "password": password}
        if sep
        else {"username": None, "password": user}
    )


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """``redis[s]+cluster://[user:password@]host:port[,host:port…][/0][?ssl_ca_certs=…]``:
    the startup nodes and the client options (``rediss+`` is TLS). A cluster has db 0 only."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    auth, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ConfigError("REDIS_URL: a Redis Cluster has database 0 only")
    nodes, kw = _nodes(hosts, "cluster node address"), _auth(auth)
    if scheme.startswith("rediss"):
        kw["ssl"] = True
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name != "ssl_ca_certs":
            raise ConfigError(f"REDIS_URL: cluster URLs take ssl_ca_certs only, not {name!r}")
        kw["ssl_ca_certs"] = value
    return nodes, kw


def is_cluster(r: Any) -> bool:
    """True for a Redis Cluster client (asyncio or sync): atomic steps must be single-slot."""
    return isinstance(r, aiocluster.RedisCluster | redis.cluster.RedisCluster)


def _require(url: str | None) -> str:
    """The URL, checked: unset or malformed is a :class:`ConfigError` naming REDIS_URL."""
    if not url:
        raise ConfigError("REDIS_URL: not set (services need a server; `up` starts one)")
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            parsed = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as e:
            raise ConfigError(f"REDIS_URL: malformed {shown_url(url)}: {e}") from None
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            path = parsed.get(name)
            if isinstance(path, str) and not Path(path).is_file():
                raise ConfigError(f"REDIS_URL: {name}: no such file {path}")
    return url


def shown_url(url: str) -> str:
    """The URL as it may be printed: any password replaced by ``***``, query dropped."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        auth, _, host = netloc.rpartition("@")
        user, sep, _password = auth.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def async_client(
    url: str | None, *, max_connections: int = 32, transport: str = "lean"
) -> AsyncRedis:
    """An asyncio client with a bounded pool; every service uses one for its life.
    ``transport`` (``REDIS_TRANSPORT``): ``lean`` sends the non-blocking commands of
    ``redis://`` and ``rediss://`` URLs over the lean transport, ``pool`` everything over
    redis-py's pool; unix sockets, Sentinel and Cluster always use the pool.
    ``redis+sentinel://`` URLs give a client that follows the master through failovers.
    Commands are sent again only as :mod:`permitchain.store.retry` allows."""
    # The typing boundary: redis-py's client, built decoding, is what AsyncRedis states.
    return cast(
        AsyncRedis, _async_client(url, max_connections=max_connections, transport=transport)
    )


def _async_client(url: str | None, *, max_connections: int, transport: str) -> object:
    """redis-py's asyncio client for ``url``: ``Redis`` (lean or pooled), ``RedisCluster`` or
    a Sentinel master (redis-py types the last ``Any``)."""
    url = _require(url)
    if transport not in TRANSPORTS:
        raise ConfigError(f"REDIS_TRANSPORT: {transport!r} is not one of {', '.join(TRANSPORTS)}")
    if url.startswith(CLUSTER_SCHEMES):
        nodes, kw = parse_cluster_url(url)
        return aiocluster.RedisCluster(
            startup_nodes=[aiocluster.ClusterNode(h, p) for h, p in nodes],
            max_connections=max_connections,
            retry=_retry(redis.asyncio.retry.Retry),
            **kw,
            **_client_kwargs(),
        )
    if url.startswith("redis+sentinel://"):
        nodes, service, kw = parse_sentinel_url(url)
        sentinel = aiosentinel.Sentinel(nodes, socket_connect_timeout=2.0)  # type: ignore[no-untyped-call]
        return sentinel.master_for(
            service,
            redis_class=_SentinelRedis,
            connection_pool_class=_SentinelPool,
            max_connections=max_connections,
            retry=no_retry(),
            **kw,
            **_client_kwargs(),
        )
    # A blocking pool: when every connection is busy a command waits for one (bounded by
    # POOL_WAIT_S) instead of failing with "Too many connections".
    pool = _Pool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        retry=no_retry(),
        **_client_kwargs(),
    )
    # The client owns the pool (aclose() closes it); with the lean transport, non-blocking
    # commands take it (permitchain.store.lean: one pipelined connection, hiredis), the rest
    # the pool.
    try:
        return lean_client(pool, lean=transport == "lean")
    except (ssl.SSLError, OSError, redis.exceptions.RedisError) as e:  # the URL's TLS files
        raise ConfigError(f"REDIS_URL: TLS options of {shown_url(url)}: {e}") from None


def transport_name(r: AsyncRedis) -> str:
    """Which transport a client of :func:`async_client` uses, for the start-up log line."""
    if is_cluster(r):
        return "pool (Redis Cluster)"
    lean = getattr(r, "lean", None)
    if lean is not None:
        return "lean over TLS" if lean.tls is not None else "lean"
    if isinstance(r, _SentinelRedis):
        return "pool (Sentinel)"
    kind = getattr(getattr(r, "connection_pool", None), "connection_class", None)
    if kind is not None and issubclass(kind, redis.asyncio.UnixDomainSocketConnection):
        return "pool (unix socket)"
    if kind is not None and issubclass(kind, redis.asyncio.SSLConnection):
        return "pool over TLS"
    return "pool"


def sync_client(url: str | None) -> SyncRedis:
    """A blocking client for the CLI."""
    # The typing boundary: redis-py's client, built decoding, is what SyncRedis states.
    return cast(SyncRedis, _sync_client(url))


def _sync_client(url: str | None) -> object:
    """redis-py's blocking client for ``url``: ``Redis``, ``RedisCluster`` or a Sentinel
    master (redis-py types the last ``Any``)."""
    url = _require(url)
    if url.startswith(CLUSTER_SCHEMES):
        nodes, kw = parse_cluster_url(url)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
            retry=_retry(),
            **kw,
            **_client_kwargs(),
        )
    if url.startswith("redis+sentinel://"):
        nodes, service, kw = parse_sentinel_url(url)
        s = redis.sentinel.Sentinel(nodes, socket_connect_timeout=2.0)  # type: ignore[no-untyped-call]
        return s.master_for(  # type: ignore[no-untyped-call]
            service,
            redis_class=_SyncRedis,
            connection_pool_class=_SyncSentinelPool,
            retry=no_retry_sync(),
            **kw,
            **_client_kwargs(),
        )
    pool = _SyncPool.from_url(url, retry=no_retry_sync(), **_client_kwargs())
    return _SyncRedis.from_pool(pool)


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


def is_wrong_type(reply: object) -> bool:
    """Is ``reply`` (an exception, or a pipeline's reply in place of one) the server's
    ``WRONGTYPE`` error (a command, or a script's ``redis.call``, on a key of another type)?"""
    return isinstance(reply, redis.exceptions.ResponseError) and "WRONGTYPE" in str(reply)


_TYPE_FAULTS: tuple[type[BaseException], ...] = (*REDIS_FAULTS, redis.exceptions.ResponseError)


def _type_name(reply: object) -> str:
    return reply.decode("utf-8", "backslashreplace") if isinstance(reply, bytes) else str(reply)


async def wrong_type(r: AsyncRedis, key: str, expected: str) -> WrongTypeError:
    """The ``WRONGTYPE`` fault on ``key`` as :class:`WrongTypeError`, naming the type the key
    holds (one ``TYPE``; ``unknown`` when even that fails)."""
    try:
        actual = _type_name(await r.type(key))
    except _TYPE_FAULTS:
        actual = "unknown"
    return WrongTypeError(key, actual, expected)


def wrong_type_sync(r: SyncRedis, key: str, expected: str) -> WrongTypeError:
    """:func:`wrong_type` for the blocking client."""
    try:
        actual = _type_name(r.type(key))
    except _TYPE_FAULTS:
        actual = "unknown"
    return WrongTypeError(key, actual, expected)


async def first_fault(
    r: AsyncRedis, replies: Sequence[object], expected: Sequence[tuple[str, str] | None]
) -> BaseException | None:
    """The first fault among a pipeline's replies (``execute(raise_on_error=False)``): a
    ``WRONGTYPE`` as :class:`WrongTypeError` naming the key, ``expected[i]`` being the
    ``(key, type)`` the i-th command read; any other as it is. None when there is none."""
    for reply, what in zip(replies, expected, strict=False):
        if isinstance(reply, BaseException):
            if what is not None and is_wrong_type(reply):
                return await wrong_type(r, *what)
            return reply
    return None
