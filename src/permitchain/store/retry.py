"""The one retry rule of the Redis clients, the same on the lean transport and redis-py's pool.

A command that failed with a connection fault is sent again (up to :data:`RETRIES` more
times, after a jittered exponential backoff) only when sending it again cannot apply it twice:

* it was **never written** to the server: the connection could not be made (refused, timed
  out, TLS handshake refused) or no pooled connection could be had (:class:`NotSent`); or
* it is **read-only** (:data:`READ_ONLY`): a GET, HGETALL, XRANGE, an XREAD without a group…

A write (SET, XADD, HSET, EVALSHA/EVAL, XACK, XREADGROUP, which moves the pending list,
MULTI/EXEC…) that may have reached the server is never sent again: its fault surfaces to the
caller (a :class:`~permitchain.contract.errors.StoreError` through ``atranslate``) and the
caller's fail-closed handling decides. redis-py's own retries are off (:func:`no_retry`):
they would resend any command on a ``ConnectionError``. The asyncio clients (the services) and
the blocking client (the CLI) follow the rule; redis-py's Cluster client keeps its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio.retry
import redis.exceptions
import redis.retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

T = TypeVar("T")

#: Further attempts after the first, when the rule allows any.
RETRIES = 2
#: The backoff before attempt n (1, 2 …): jittered, 50 ms doubling, at most 1 s.
BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=1.0)

#: Commands that never change the data set: sending one twice is harmless.
READ_ONLY = frozenset(
    {
        "GET",
        "MGET",
        "GETRANGE",
        "STRLEN",
        "HGET",
        "HGETALL",
        "HMGET",
        "HKEYS",
        "HVALS",
        "HLEN",
        "HEXISTS",
        "HSTRLEN",
        "HSCAN",
        "HRANDFIELD",
        "XRANGE",
        "XREVRANGE",
        "XREAD",
        "XLEN",
        "XINFO",
        "XPENDING",
        "TYPE",
        "TTL",
        "PTTL",
        "EXPIRETIME",
        "PEXPIRETIME",
        "EXISTS",
        "ZRANGE",
        "ZREVRANGE",
        "ZRANGEBYSCORE",
        "ZREVRANGEBYSCORE",
        "ZRANGEBYLEX",
        "ZREVRANGEBYLEX",
        "ZCARD",
        "ZCOUNT",
        "ZSCORE",
        "ZMSCORE",
        "ZRANK",
        "ZREVRANK",
        "ZSCAN",
        "ZRANDMEMBER",
        "SMEMBERS",
        "SISMEMBER",
        "SMISMEMBER",
        "SCARD",
        "SSCAN",
        "SRANDMEMBER",
        "LRANGE",
        "LLEN",
        "LINDEX",
        "LPOS",
        "GETBIT",
        "BITCOUNT",
        "BITPOS",
        "SCAN",
        "KEYS",
        "DBSIZE",
        "RANDOMKEY",
        "OBJECT",
        "PING",
        "ECHO",
        "TIME",
        "INFO",
        "LASTSAVE",
        "ROLE",
        "EVAL_RO",
        "EVALSHA_RO",
        "FCALL_RO",
    }
)

#: Faults after which a command may be sent again (the rule above still decides).
_CONNECTION_FAULTS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
#: Connection faults that another attempt cannot mend.
_FINAL = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)


class NotSent(redis.exceptions.ConnectionError):
    """The command was never written: no connection could be made or had. Always safe to
    send again; a store fault like any ``ConnectionError`` when the attempts run out."""


_READ_ONLY_NAMES: dict[Any, bool] = {}


def read_only(name: Any) -> bool:
    """Is the command named ``name`` (``"GET"``, ``b"get"``, ``"XINFO STREAM"``) read-only?"""
    known = _READ_ONLY_NAMES.get(name)
    if known is None:  # the first time this name is seen (a few dozen in all)
        word = name.decode() if isinstance(name, bytes) else str(name)
        known = _READ_ONLY_NAMES[name] = word.split(" ", 1)[0].upper() in READ_ONLY
    return known


def may_retry(error: BaseException, names: Iterable[Any]) -> bool:
    """May the commands ``names``, failed together with ``error``, be sent again?"""
    if not isinstance(error, _CONNECTION_FAULTS) or isinstance(error, _FINAL):
        return False
    return isinstance(error, NotSent) or all(read_only(n) for n in names)


async def after(error: BaseException, do: Callable[[], Awaitable[T]], names: Sequence[Any]) -> T:
    """``do()`` sent the commands ``names`` and failed with ``error``: send them again when
    :func:`may_retry` allows, at most :data:`RETRIES` times; else raise (the last) fault.
    Called only on a failure, so the first attempt costs nothing extra."""
    failures = 1
    while failures <= RETRIES and may_retry(error, names):
        await asyncio.sleep(BACKOFF.compute(failures))
        try:
            return await do()
        except _CONNECTION_FAULTS as e:
            error, failures = e, failures + 1
    raise error


def after_sync(error: BaseException, do: Callable[[], T], names: Sequence[Any]) -> T:
    """:func:`after` for the blocking client (the CLI)."""
    failures = 1
    while failures <= RETRIES and may_retry(error, names):
        time.sleep(BACKOFF.compute(failures))
        try:
            return do()
        except _CONNECTION_FAULTS as e:
            error, failures = e, failures + 1
    raise error


#: Faults :func:`after` is called with (what a transport catches around its first attempt).
CONNECTION_FAULTS = _CONNECTION_FAULTS


class MarksUnsent:
    """A connection pool whose checkout failures (no connection could be made or had) are
    :class:`NotSent`: nothing of the command was written. Mixed into redis-py's pools."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except _FINAL:
            raise
        except _CONNECTION_FAULTS as e:
            raise NotSent(str(e)) from e


class MarksUnsentSync:
    """:class:`MarksUnsent` for redis-py's blocking pools."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except _FINAL:
            raise
        except _CONNECTION_FAULTS as e:
            raise NotSent(str(e)) from e


def no_retry() -> redis.asyncio.retry.Retry:
    """For redis-py's asyncio connections: no retry of its own (this module's rule decides)."""
    return redis.asyncio.retry.Retry(NoBackoff(), 0)


def no_retry_sync() -> redis.retry.Retry:
    """:func:`no_retry` for redis-py's blocking connections."""
    return redis.retry.Retry(NoBackoff(), 0)
