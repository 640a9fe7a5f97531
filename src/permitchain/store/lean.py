"""A lean transport for redis-py: non-blocking commands over one pipelined connection.

Why: profiles of the chain (docs/performance.md) showed redis-py's per-command client work
(pool checkout under a condition lock, timeout contexts, observability hooks, pure-Python
packing) at ~70 µs of CPU per command on the project's 2-core machines, several times
Redis's own round trip, and it was what dominated the chain's CPU. This module keeps
redis-py's whole API (argument building, response callbacks, exception classes, scripts,
pipelines) and replaces only the transport, for the commands where that is safe:

* every command that neither blocks nor changes connection state goes over **one**
  connection per client, written at once and matched to its reply in order (commands issued
  by concurrent tasks share the connection: they are pipelined on the wire), replies parsed
  by hiredis in C;
* a blocking stream read (``XREAD``/``XREADGROUP`` with ``BLOCK`` > 0) takes a connection of
  its own (a *lane*: one per reader at a time, kept for the next read, dropped when the read
  was cancelled), its reply due ``BLOCK`` plus :data:`COMMAND_TIMEOUT_S` after sending;
* ``WATCH``/``MULTI``/``EXEC`` transactions, ``SELECT``/``AUTH``/``CLIENT``/pub-sub, every
  other command in :data:`POOL_ONLY` and reads blocking for ever use redis-py's own pooled
  connections, unchanged.

Fail-closed as the pool is: a lost connection fails every command in flight with
``redis.exceptions.ConnectionError``; a server that stops answering fails them with
``TimeoutError`` after :data:`COMMAND_TIMEOUT_S`; the next command reconnects. Whether a
failed command is sent again is :mod:`permitchain.store.retry`'s rule, the same as for the
pool's commands (a write that may have reached the server never is). Used for ``redis://``
and ``rediss://`` (TLS, one ``SSLContext`` per client, built from the URL's options as redis-py
builds it) TCP URLs; unix sockets, Sentinel and Cluster keep the pooled transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis._parsers.base import BaseParser
from redis._parsers.response_callbacks import get_response_callbacks
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection, RedisSSLContext, SSLConnection
from redis.client import CaseInsensitiveDict

from permitchain.store import retry

#: Longest a command may wait for its reply before the connection is dropped.
COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0
#: Longest a client's close waits for its connections to close (TLS: the close_notify).
CLOSE_TIMEOUT_S = 1.0
CLIENT_NAME = "permitchain-lean"
NEVER_DECODE = "NEVER_DECODE"
EMPTY_RESPONSE = "EMPTY_RESPONSE"

#: Commands that block, or change or depend on connection state: redis-py's pool runs them.
POOL_ONLY = frozenset(
    {
        "WATCH",
        "UNWATCH",
        "MULTI",
        "EXEC",
        "DISCARD",
        "SELECT",
        "AUTH",
        "HELLO",
        "CLIENT",
        "RESET",
        "QUIT",
        "MONITOR",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
        "SHUTDOWN",
        "DEBUG",
        "SYNC",
        "PSYNC",
        "READONLY",
        "READWRITE",
        "ASKING",
    }
)


#: The lean connection speaks RESP2: redis-py's RESP2 callbacks give its usual Python shapes.
_CALLBACKS: Any = get_response_callbacks(user_protocol=2, legacy_responses=True)
RESP2_CALLBACKS: Any = CaseInsensitiveDict(_CALLBACKS)
#: the same, by upper-case name (redis-py's command methods send them so): a plain lookup
_UPPER_CALLBACKS: dict[str, Any] = {k.upper(): v for k, v in _CALLBACKS.items()}


def pool_only(name: Any) -> bool:
    """Must this command take redis-py's pool (it blocks or uses connection state)?"""
    only = _POOL_ONLY_NAMES.get(name)
    if only is None:  # the first time this command name is seen (a handful in all)
        only = _POOL_ONLY_NAMES[name] = str(name).split(" ", 1)[0].upper() in POOL_ONLY
    return only


def lean_ok(args: Sequence[Any]) -> bool:
    """May this command use the shared lean connection (it neither blocks nor changes
    connection state)?"""
    return not pool_only(args[0]) and (args[0] not in _READS or block_ms(args) is None)


_POOL_ONLY_NAMES: dict[Any, bool] = {}
_READS = frozenset({"XREAD", "XREADGROUP", "xread", "xreadgroup"})


def block_ms(args: Sequence[Any]) -> int | None:
    """The BLOCK milliseconds of an XREAD/XREADGROUP, None when it does not block."""
    if args[0] not in _READS and str(args[0]).upper() not in _READS:
        return None
    for i, a in enumerate(args[1:-1], start=1):
        if isinstance(a, str | bytes) and a in _BLOCK:
            return int(args[i + 1])
    return None


_BLOCK = frozenset({"BLOCK", b"BLOCK", "block", b"block"})


def pack(args: Sequence[Any]) -> bytes:
    """RESP encoding, with redis-py's argument rules (str, bytes, int, float; no bool), in C
    (hiredis) for the usual arguments."""
    first = args[0]
    if isinstance(first, str) and " " in first:  # "SCRIPT LOAD": the server wants two words
        args = (*first.split(), *args[1:])
    try:
        packed: bytes = hiredis.pack_command(tuple(args))
        return packed
    except TypeError:  # a bool, memoryview or other type: the rules below decide
        return _pack_py(args)


def _pack_py(args: Sequence[Any]) -> bytes:
    parts = list(args)
    out = [b"*%d\r\n" % len(parts)]
    for a in parts:
        if isinstance(a, str):
            b = a.encode()
        elif isinstance(a, bytes):
            b = a
        elif isinstance(a, bool):
            raise redis.exceptions.DataError(
                "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."
            )
        elif isinstance(a, int | float):
            b = repr(a).encode()
        elif isinstance(a, memoryview):
            b = a.tobytes()
        else:
            raise redis.exceptions.DataError(
                f"Invalid input of type: '{type(a).__name__}'. "
                "Convert to a bytes, string, int or float first."
            )
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def error_of(reply: Any) -> redis.exceptions.RedisError:
    """A server error reply as the exception redis-py raises for it."""
    err: redis.exceptions.RedisError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return err


class _Batch:
    """Commands written together: one future, resolved with all their replies in order."""

    __slots__ = ("deadline", "fut", "raws", "replies")

    def __init__(self, fut: asyncio.Future[list[Any]], raws: Sequence[bool], deadline: float):
        self.fut, self.raws, self.deadline = fut, raws, deadline
        self.replies: list[Any] = []


class _Proto(asyncio.Protocol):
    """One connection: replies matched to the batches waiting for them, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader(encoding="utf-8")
        self.raw = False  # the reader's current mode (NEVER_DECODE replies are bytes)
        self.waiting: deque[_Batch] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: done when the connection is closed (connection_lost)
        self.gone: asyncio.Future[None] = loop.create_future()
        self.error: type[redis.exceptions.RedisError] = redis.exceptions.ConnectionError
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._watchdog = self.loop.call_later(1.0, self._check)

    def _check(self) -> None:
        """A reply overdue by COMMAND_TIMEOUT_S: the server hangs; drop the connection."""
        if self.closed:
            return
        if self.waiting and time.monotonic() > self.waiting[0].deadline:
            self.error = redis.exceptions.TimeoutError
            assert self.transport is not None
            self.transport.abort()
            return
        self._watchdog = self.loop.call_later(1.0, self._check)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting, reader = self.waiting, self.reader
        while waiting:
            batch = waiting[0]
            raw = batch.raws[len(batch.replies)]
            if raw is not self.raw:
                reader.set_encoding(None if raw else "utf-8")
                self.raw = raw
            try:
                reply = reader.gets()
            except UnicodeDecodeError as e:  # the reply is consumed; it fails, as in redis-py
                reply = e
            except hiredis.ProtocolError as e:
                self.error = redis.exceptions.ConnectionError
                self._fail(f"protocol error: {e}")
                assert self.transport is not None
                self.transport.abort()
                return
            if reply is False:
                return
            batch.replies.append(reply)
            if len(batch.replies) == len(batch.raws):
                waiting.popleft()
                if not batch.fut.done():
                    batch.fut.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gone.done():
            self.gone.set_result(None)
        if self._watchdog is not None:
            self._watchdog.cancel()
        why = "timed out" if self.error is redis.exceptions.TimeoutError else "lost"
        self._fail(f"connection {why}" + (f": {exc}" if exc else ""))

    def _fail(self, msg: str) -> None:
        while self.waiting:
            batch = self.waiting.popleft()
            if not batch.fut.done():
                batch.fut.set_exception(self.error(msg))

    def send(
        self, data: bytes, raws: Sequence[bool], wait_s: float = 0.0
    ) -> asyncio.Future[list[Any]]:
        """Write ``data`` (one command per ``raws`` entry: its reply undecoded?); the future
        gets the replies, in order, due within COMMAND_TIMEOUT_S plus ``wait_s`` (a blocking
        read's own wait). A reply that failed to decode is its UnicodeDecodeError."""
        if self.closed or self.transport is None:
            raise retry.NotSent("connection lost")
        fut: asyncio.Future[list[Any]] = self.loop.create_future()
        if not raws:
            fut.set_result([])
            return fut
        self.waiting.append(_Batch(fut, raws, time.monotonic() + COMMAND_TIMEOUT_S + wait_s))
        self.transport.write(data)
        return fut


class Lean:
    """The lean connection of one client (made on first use, remade after a loss)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        #: the client's one TLS context (``rediss://``), shared by its connections and lanes
        self.tls = tls
        self.proto: _Proto | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def connection(self) -> _Proto:
        p = self.proto
        loop = asyncio.get_running_loop()
        if p is not None and not p.closed and p.loop is loop:
            return p
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            p = self.proto
            if p is not None and not p.closed and p.loop is loop:
                return p
            if p is not None and not p.closed and p.transport is not None:
                with contextlib.suppress(Exception):
                    p.transport.abort()  # made in another (finished) event loop
            self.proto = await self._connect(loop)
            return self.proto

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Proto:
        tls = self.tls
        try:
            _t, p = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Proto(loop),
                    self.host,
                    self.port,
                    ssl=tls,
                    server_hostname=self.host if tls is not None else None,
                    ssl_handshake_timeout=CONNECT_TIMEOUT_S if tls is not None else None,
                ),
                CONNECT_TIMEOUT_S,
            )
        except ssl.SSLError as e:
            raise retry.NotSent(
                f"REDIS_URL {self.host}:{self.port}: TLS handshake failed: {tls_cause(e)}"
            ) from e
        except (OSError, TimeoutError) as e:
            what = "TLS connection" if tls is not None else "connection"
            raise retry.NotSent(
                f"REDIS_URL {self.host}:{self.port}: {what} failed: {e or type(e).__name__}"
            ) from e
        hello: list[list[Any]] = []
        if self.password is not None:
            hello.append(["AUTH", *([self.username] if self.username else []), self.password])
        if self.db:
            hello.append(["SELECT", self.db])
        # Named for CLIENT LIST; a user whose ACL forbids CLIENT just stays unnamed.
        hello.append(["CLIENT", "SETNAME", CLIENT_NAME])
        try:
            replies = await p.send(b"".join(pack(c) for c in hello), [False] * len(hello))
        except redis.exceptions.ConnectionError as e:
            # lost while the connection was being set up: the caller's command was not sent
            # (a server that hangs there is a TimeoutError, as for any command)
            raise retry.NotSent(f"REDIS_URL {self.host}:{self.port}: {e}") from e
        for reply in replies[:-1]:
            if isinstance(reply, hiredis.ReplyError):
                assert p.transport is not None
                p.transport.abort()
                raise error_of(reply)
        return p

    async def call(self, args: Sequence[Any], raw: bool = False, wait_s: float = 0.0) -> Any:
        (reply,) = await self.call_many([(args, raw)], wait_s)
        return reply

    def clone(self) -> Lean:
        return Lean(
            self.host,
            self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            tls=self.tls,
        )

    def abort(self) -> None:
        """Drop the connection now (a reply may still be due on it)."""
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.abort()

    async def aclose(self) -> None:
        """Close the connection and wait (at most :data:`CLOSE_TIMEOUT_S`) until it is closed:
        over TLS that is after the close_notify exchange, not at once."""
        p = self.proto
        if p is None or p.transport is None or p.closed:
            return
        p.transport.close()
        if p.loop is asyncio.get_running_loop():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(p.gone), CLOSE_TIMEOUT_S)
        if not p.closed:
            p.transport.abort()

    async def call_many(
        self, commands: Sequence[tuple[Sequence[Any], bool]], wait_s: float = 0.0
    ) -> list[Any]:
        """Send ``commands`` (arguments, reply undecoded?) in one write; their replies, each
        due within COMMAND_TIMEOUT_S plus ``wait_s``. A reply that failed to decode raises."""
        p = await self.connection()
        replies = await p.send(
            b"".join(pack(a) for a, _ in commands), [r for _, r in commands], wait_s
        )
        for reply in replies:
            if isinstance(reply, UnicodeDecodeError):
                raise reply
        return replies


def finish(name: Any, reply: Any, options: dict[str, Any]) -> Any:
    """What redis-py's ``parse_response`` does with a reply: errors raised as redis-py's
    exception classes, then the command's response callback."""
    if isinstance(reply, hiredis.ReplyError):
        if EMPTY_RESPONSE in options:
            return options[EMPTY_RESPONSE]
        raise error_of(reply)
    if options:
        options.pop(EMPTY_RESPONSE, None)
        options.pop("keys", None)
    cb = _UPPER_CALLBACKS.get(name)
    if cb is None and isinstance(name, str) and not name.isupper():
        cb = RESP2_CALLBACKS.get(name)
    return cb(reply, **options) if cb is not None else reply


class PoolPipeline(Pipeline):
    """redis-py's pipeline (on the pool), its commands sent again only as
    :mod:`permitchain.store.retry` allows (never after a ``WATCH``: its guard is gone)."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.watching or self.connection is not None:
            return await super().execute(raise_on_error)
        stack, scripts = list(self.command_stack), set(self.scripts)

        async def again() -> list[Any]:
            self.command_stack, self.scripts = list(stack), set(scripts)
            return await Pipeline.execute(self, raise_on_error)

        try:
            return await super().execute(raise_on_error)
        except retry.CONNECTION_FAULTS as e:
            return await retry.after(e, again, [args[0] for args, _ in stack])


class LeanPipeline(PoolPipeline):
    """A non-transactional pipeline written in one go on the lean connection."""

    lean: Lean

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        if (
            self.watching
            or self.explicit_transaction
            or self.is_transaction
            or not stack
            or not all(lean_ok(args) for args, _ in stack)
        ):
            return await super().execute(raise_on_error)
        # Each script the pipeline runs is loaded ahead of it, in the same write: a no-op for a
        # script the server has (it only hashes the text), and never NOSCRIPT after a restart
        # or a SCRIPT FLUSH (a pipeline's other commands would have run: no retry is safe).
        to_load = list(self.scripts)
        commands: list[tuple[Sequence[Any], bool]] = [
            (("SCRIPT LOAD", s.script), False) for s in to_load
        ]
        commands += [(args, bool(options.get(NEVER_DECODE))) for args, options in stack]
        # Nothing of the pool's was used (no connection, no WATCH): reset() reduces to this.
        self.command_stack, self.scripts = [], set()
        try:
            replies = await self.lean.call_many(commands)
        except retry.CONNECTION_FAULTS as e:
            names = [args[0] for args, _ in stack]
            replies = await retry.after(e, lambda: self.lean.call_many(commands), names)
        for reply in replies[: len(to_load)]:
            if isinstance(reply, hiredis.ReplyError):
                raise error_of(reply)
        out: list[Any] = []
        for (args, options), reply in zip(stack, replies[len(to_load) :], strict=True):
            opts = {k: v for k, v in options.items() if k != NEVER_DECODE} if options else {}
            try:
                out.append(finish(args[0], reply, opts))
            except redis.exceptions.ResponseError as e:
                out.append(e)
        if raise_on_error:
            self.raise_first_error(stack, out)
        return out


class LeanRedis(aioredis.Redis):
    """redis-py's asyncio client with the lean transport for non-blocking commands."""

    lean: Lean | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: idle connections for blocking stream reads (one per reader at a time)
        self.lanes: list[Lean] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        lean = self.lean
        if lean is None or pool_only(args[0]) or block_ms(args) == 0:
            # the pool's transport (a read blocking for ever: no reply deadline fits)
            try:
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
            except retry.CONNECTION_FAULTS as e:
                return await retry.after(
                    e,
                    lambda: super(LeanRedis, self).execute_command(*args, **options),  # type: ignore[no-untyped-call]
                    args[:1],
                )
        wait = block_ms(args)
        raw = bool(options.pop(NEVER_DECODE, False))
        try:
            if wait is None:
                reply = await lean.call(args, raw)
            else:
                reply = await self._blocking_read(args, raw, wait / 1000)
        except retry.CONNECTION_FAULTS as e:
            if wait is None:
                reply = await retry.after(e, lambda: lean.call(args, raw), args[:1])
            else:
                w = wait / 1000
                reply = await retry.after(e, lambda: self._blocking_read(args, raw, w), args[:1])
        return finish(args[0], reply, options)

    async def _blocking_read(self, args: Sequence[Any], raw: bool, wait_s: float) -> Any:
        """A blocking stream read on a connection of its own (a lane), returned for reuse
        only when the read completed (a cancelled read may still be in flight on it)."""
        assert self.lean is not None
        lane = self.lanes.pop() if self.lanes else self.lean.clone()
        done = False
        try:
            reply = await lane.call(args, raw, wait_s)
            done = True
            return reply
        finally:
            if done and lane.proto is not None and not lane.proto.closed:
                self.lanes.append(lane)
            else:
                lane.abort()

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
        if self.lean is None or transaction:
            return PoolPipeline(
                self.connection_pool, self.response_callbacks, transaction, shard_hint
            )
        p = LeanPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        p.lean = self.lean
        return p

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        lanes, self.lanes = self.lanes, []
        await asyncio.gather(*(c.aclose() for c in [*lanes, self.lean] if c is not None))
        await super().aclose(close_connection_pool)


def lean_client(pool: aioredis.ConnectionPool, *, lean: bool = True) -> aioredis.Redis:
    """A client owning ``pool``; with ``lean``, the lean transport for TCP connections (plain
    or TLS), redis-py's transport else."""
    client = LeanRedis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as Redis.from_pool: the client owns the pool
    kw = pool.connection_kwargs
    if lean and pool.connection_class in (Connection, SSLConnection) and kw.get("decode_responses"):
        tls = pool.connection_class is SSLConnection
        client.lean = Lean(
            str(kw.get("host", "localhost")),
            int(kw.get("port", 6379)),
            db=int(kw.get("db") or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            tls=tls_context(kw) if tls else None,
        )
    return client


def tls_context(kw: dict[str, Any]) -> ssl.SSLContext:
    """The ``SSLContext`` redis-py's ``SSLConnection`` would build from the same options
    (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
    ``ssl_check_hostname``…; by default the server's certificate and name are verified)."""
    options: dict[str, Any] = {"cert_reqs": "required", "check_hostname": True}
    options.update({k.removeprefix("ssl_"): v for k, v in kw.items() if k.startswith("ssl_")})
    context: ssl.SSLContext = RedisSSLContext(**options).get()
    return context


def tls_cause(e: ssl.SSLError) -> str:
    """The reason of a TLS failure in a few words (a bad CA, a wrong name…)."""
    verify = getattr(e, "verify_message", None)
    reason = f"certificate verify failed: {verify}" if verify else (e.reason or str(e))
    return str(reason).replace("\n", " ")
