"""The Redis client as the project uses it: typed protocols of the commands it sends.

Every client the store builds decodes replies to ``str`` (``decode_responses=True``), so a
reply is a ``str``, a ``dict[str, str]``, an ``int``… never ``bytes``. redis-py's own
annotations cannot see that option: they type each reply ``bytes | str`` and each asyncio
method ``Awaitable[T] | T``. These protocols state the shapes our clients return, for
exactly the commands the project calls, with redis-py's parameter names so that every call
type-checks as written. The builders in :mod:`permitchain.store.client` are the one place a
redis-py object becomes one of these (a single ``cast`` each); ``tests/unit`` checks that the
real clients (plain, lean, Sentinel, Cluster) have every member listed here.

* :class:`AsyncRedis`: the asyncio client every service holds; its :meth:`~AsyncRedis.pipeline`
  gives an :class:`AsyncPipeline`, whose commands queue (they return the pipeline) until
  :meth:`~AsyncPipeline.execute`.
* :class:`SyncRedis`: the blocking client of the CLI's start check and the chain launcher.

Replies whose shape is open (``INFO``, ``XINFO``, ``XPENDING``, scripts, raw
``execute_command``, a pipeline's replies) are ``Any`` or hold ``Any``. A command the code
starts to send is added here first: mypy refuses a call the protocol does not list.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, overload, runtime_checkable

#: A value a command sends (redis-py encodes it; never a bool).
Value = str | bytes | int | float
#: A stream entry as read: (id, fields).
Entry = tuple[str, dict[str, str]]
#: A stream id, or ``$``/``>``/``0``: what XREAD and XREADGROUP take per stream.
StreamId = str | int
#: An XREAD reply: per stream with entries, its name and the entries (RESP2, as our clients
#: speak it; each pair is a two-item list), ``[]`` when the read timed out.
StreamReads = list[tuple[str, list[Entry]]]


@runtime_checkable
class AsyncScript(Protocol):
    """A registered Lua script (redis-py's ``AsyncScript``): its text and SHA1, and a call."""

    script: Any
    sha: Any

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Sequence[Any] | None = None,
        client: AsyncRedis | AsyncPipeline | None = None,
    ) -> Any: ...


@runtime_checkable
class AsyncRedis(Protocol):
    """The asyncio client (redis-py's ``redis.asyncio.Redis``/``RedisCluster``, decoding)."""

    # -- hashes
    async def hgetall(self, name: str) -> dict[str, str]: ...
    async def hget(self, name: str, key: str) -> str | None: ...
    async def hmget(self, name: str, keys: str | Iterable[str], *args: str) -> list[str | None]: ...
    async def hset(
        self,
        name: str,
        key: str | None = None,
        value: Value | None = None,
        mapping: Mapping[str, Value] | None = None,
        items: Sequence[Value] | None = None,
    ) -> int: ...
    async def hdel(self, name: str, *keys: str) -> int: ...
    async def hkeys(self, name: str) -> list[str]: ...

    # -- strings and keys
    async def get(self, name: str) -> str | None: ...
    @overload
    async def set(
        self,
        name: str,
        value: Value,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
        get: Literal[False] = False,
    ) -> bool | None: ...
    @overload
    async def set(
        self,
        name: str,
        value: Value,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
        *,
        get: Literal[True],
    ) -> str | None: ...
    async def incr(self, name: str, amount: int = 1) -> int: ...
    async def delete(self, *names: str) -> int: ...
    async def exists(self, *names: str) -> int: ...
    async def type(self, name: str) -> str: ...
    def scan_iter(
        self, match: str | None = None, count: int | None = None, _type: str | None = None
    ) -> AsyncIterator[str]: ...

    # -- streams
    async def xadd(
        self,
        name: str,
        fields: Mapping[str, Value],
        id: str = "*",
        maxlen: int | None = None,
        approximate: bool = True,
        nomkstream: bool = False,
        minid: str | None = None,
        limit: int | None = None,
    ) -> str: ...
    async def xrange(
        self, name: str, min: str = "-", max: str = "+", count: int | None = None
    ) -> list[Entry]: ...
    async def xrevrange(
        self, name: str, max: str = "+", min: str = "-", count: int | None = None
    ) -> list[Entry]: ...
    async def xread(
        self,
        streams: Mapping[str, StreamId],
        count: int | None = None,
        block: int | None = None,
    ) -> StreamReads: ...
    async def xack(self, name: str, groupname: str, *ids: str) -> int: ...
    async def xpending_range(
        self,
        name: str,
        groupname: str,
        min: str,
        max: str,
        count: int,
        consumername: str | None = None,
        idle: int | None = None,
    ) -> list[dict[str, Any]]: ...
    async def xgroup_create(
        self,
        name: str,
        groupname: str,
        id: str = "$",
        mkstream: bool = False,
        entries_read: int | None = None,
    ) -> bool: ...
    async def xinfo_stream(self, name: str, full: bool = False) -> dict[str, Any]: ...
    async def xinfo_groups(self, name: str) -> list[dict[str, Any]]: ...

    # -- sets and sorted sets
    async def sadd(self, name: str, *values: Value) -> int: ...
    async def smembers(self, name: str) -> builtins.set[str]: ...
    async def zadd(
        self,
        name: str,
        mapping: Mapping[str, float],
        nx: bool = False,
        xx: bool = False,
        ch: bool = False,
        incr: bool = False,
        gt: bool = False,
        lt: bool = False,
    ) -> int: ...
    async def zrem(self, name: str, *values: str) -> int: ...
    @overload
    async def zrangebyscore(
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: Literal[False] = False,
    ) -> list[str]: ...
    @overload
    async def zrangebyscore(
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        *,
        withscores: Literal[True],
    ) -> list[tuple[str, float]]: ...

    # -- server, scripts, connection
    async def info(self, section: str | None = None, *args: str) -> dict[str, Any]: ...
    async def ping(self) -> bool: ...
    async def time(self) -> tuple[int, int]: ...
    async def script_load(self, script: str) -> str: ...
    def register_script(self, script: str) -> AsyncScript: ...
    async def execute_command(self, *args: Any, **options: Any) -> Any: ...
    def pipeline(
        self, transaction: bool = True, shard_hint: str | None = None
    ) -> AsyncPipeline: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class AsyncPipeline(Protocol):
    """An asyncio pipeline (``MULTI``/``EXEC`` when made with ``transaction=True``): each
    command queues and returns the pipeline; :meth:`execute` sends them and returns their
    replies in order (a failed command's reply is its exception with
    ``raise_on_error=False``)."""

    def hgetall(self, name: str) -> AsyncPipeline: ...
    def hget(self, name: str, key: str) -> AsyncPipeline: ...
    def hmget(self, name: str, keys: str | Iterable[str], *args: str) -> AsyncPipeline: ...
    def hset(
        self,
        name: str,
        key: str | None = None,
        value: Value | None = None,
        mapping: Mapping[str, Value] | None = None,
        items: Sequence[Value] | None = None,
    ) -> AsyncPipeline: ...
    def hsetnx(self, name: str, key: str, value: Value) -> AsyncPipeline: ...
    def hdel(self, name: str, *keys: str) -> AsyncPipeline: ...
    def hlen(self, name: str) -> AsyncPipeline: ...
    def get(self, name: str) -> AsyncPipeline: ...
    def set(
        self,
        name: str,
        value: Value,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
        get: bool = False,
    ) -> AsyncPipeline: ...
    def delete(self, *names: str) -> AsyncPipeline: ...
    def exists(self, *names: str) -> AsyncPipeline: ...
    def expire(
        self,
        name: str,
        time: int,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
    ) -> AsyncPipeline: ...
    def ttl(self, name: str) -> AsyncPipeline: ...
    def pttl(self, name: str) -> AsyncPipeline: ...
    def xadd(
        self,
        name: str,
        fields: Mapping[str, Value],
        id: str = "*",
        maxlen: int | None = None,
        approximate: bool = True,
        nomkstream: bool = False,
        minid: str | None = None,
        limit: int | None = None,
    ) -> AsyncPipeline: ...
    def xack(self, name: str, groupname: str, *ids: str) -> AsyncPipeline: ...
    def xlen(self, name: str) -> AsyncPipeline: ...
    def sadd(self, name: str, *values: Value) -> AsyncPipeline: ...
    def zadd(
        self,
        name: str,
        mapping: Mapping[str, float],
        nx: bool = False,
        xx: bool = False,
        ch: bool = False,
        incr: bool = False,
        gt: bool = False,
        lt: bool = False,
    ) -> AsyncPipeline: ...
    def zrem(self, name: str, *values: str) -> AsyncPipeline: ...
    def zrange(
        self,
        name: str,
        start: int | str,
        end: int | str,
        desc: bool = False,
        withscores: bool = False,
    ) -> AsyncPipeline: ...
    def zremrangebyscore(self, name: str, min: float | str, max: float | str) -> AsyncPipeline: ...
    def info(self, section: str | None = None, *args: str) -> AsyncPipeline: ...
    def memory_usage(self, key: str, samples: int | None = None) -> AsyncPipeline: ...
    def dbsize(self) -> AsyncPipeline: ...
    def execute_command(self, *args: Any, **options: Any) -> AsyncPipeline: ...
    async def execute(self, raise_on_error: bool = True) -> list[Any]: ...


@runtime_checkable
class SyncRedis(Protocol):
    """The blocking client (redis-py's ``redis.Redis``/``RedisCluster``, decoding): what the
    CLI's start check and the chain launcher send."""

    def get(self, name: str) -> str | None: ...
    def type(self, name: str) -> str: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...
