"""One retry rule on both transports (permitchain.store.retry), against a real server through a
TCP proxy that loses a connection at a chosen moment: a write that may have reached the
server is never sent again (applied once, the caller gets the store fault); a read is sent
again and answers; a command that was never written (the connection could not be made) is
sent again, a write included."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.exceptions
from redis.backoff import ExponentialWithJitterBackoff

from permitchain.contract.errors import StoreError
from permitchain.store import async_client, atranslate, retry, sync_client, transport_name

TRANSPORTS = ["lean", "pool"]


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


class DropProxy:
    """Forwards 127.0.0.1 connections to the real server. Once a client sends a command that
    contains ``drop_on`` (a key name), the command is forwarded, and the connection is dropped
    instead of relaying the server's reply (once per proxy)."""

    def __init__(self, upstream: tuple[str, int], drop_on: bytes | None = None) -> None:
        self.upstream, self.drop_on = upstream, drop_on
        self.dropped = 0
        self.connections = 0
        self.open: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None

    async def start(self, sock: socket.socket | None = None, serving: bool = True) -> int:
        """Listen (on ``sock`` if given; with ``serving`` False, not yet: connects are
        refused until :meth:`serve`); the port."""
        if sock is None:
            self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        else:
            self.server = await asyncio.start_server(self._client, sock=sock, start_serving=serving)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for w in self.open:
            w.transport.abort()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open.add(cw)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            sr, sw = await asyncio.open_connection(*self.upstream)
        except BaseException:
            cw.transport.abort()
            raise
        self.open.add(sw)
        armed = asyncio.Event()

        async def to_server() -> None:
            while data := await cr.read(65536):
                if self.drop_on is not None and self.drop_on in data and not self.dropped:
                    armed.set()
                sw.write(data)
                await sw.drain()

        async def to_client() -> None:
            while data := await sr.read(65536):
                if armed.is_set() and not self.dropped:
                    self.dropped += 1  # the server did the command; its reply is lost
                    return
                cw.write(data)
                await cw.drain()

        tasks = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (cw, sw):
                w.transport.abort()
            await asyncio.gather(*tasks, return_exceptions=True)


def _upstream(redis_url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(redis_url)
    if u.scheme != "redis":
        pytest.skip("the proxy relays plain TCP: REDIS_URL is not redis://")
    return u.hostname or "127.0.0.1", u.port or 6379


def _via(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_write_whose_reply_is_lost_is_applied_once(
    redis_url: str, prefix: str, transport: str
) -> None:
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"{prefix}:x"

    async def body() -> None:
        proxy = DropProxy(_upstream(redis_url), drop_on=stream.encode())
        c = async_client(_via(await proxy.start()), transport=transport)
        try:
            assert transport_name(c) == transport
            assert await c.ping() is True  # connected before the write
            with pytest.raises(StoreError, match="redis: ConnectionError"):
                async with atranslate():
                    await c.xadd(stream, {"f": "1"})
            assert proxy.dropped == 1
            assert await c.get(f"{prefix}:other") is None  # the client carries on
        finally:
            await c.aclose()
            await proxy.close()

    try:
        run(body)
        assert admin.xlen(stream) == 1  # the server ran the XADD once: it was not resent
    finally:
        admin.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_script_whose_reply_is_lost_is_not_run_again(
    redis_url: str, prefix: str, transport: str
) -> None:
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    counter = f"{prefix}:n"

    async def body() -> None:
        proxy = DropProxy(_upstream(redis_url), drop_on=counter.encode())
        c = async_client(_via(await proxy.start()), transport=transport)
        try:
            incr = c.register_script("return redis.call('INCR', KEYS[1])")
            assert await incr(keys=[f"{prefix}:warm"]) == 1  # loaded, connected
            with pytest.raises(StoreError):
                async with atranslate():
                    await incr(keys=[counter])
        finally:
            await c.aclose()
            await proxy.close()

    try:
        run(body)
        assert admin.get(counter) == "1"
    finally:
        admin.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_read_whose_reply_is_lost_is_sent_again(
    redis_url: str, prefix: str, transport: str
) -> None:
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    key, stream = f"{prefix}:h", f"{prefix}:s"
    admin.hset(key, mapping={"a": "1"})
    admin.xadd(stream, {"f": "1"})

    async def body() -> None:
        for command in ("hgetall", "xrange"):
            marker = (key if command == "hgetall" else stream).encode()
            proxy = DropProxy(_upstream(redis_url), drop_on=marker)
            c = async_client(_via(await proxy.start()), transport=transport)
            try:
                assert await c.ping() is True
                if command == "hgetall":
                    assert await c.hgetall(key) == {"a": "1"}
                else:
                    assert [f for _i, f in await c.xrange(stream)] == [{"f": "1"}]
                assert proxy.dropped == 1  # the first reply was lost: this is the second
                assert proxy.connections == 2
            finally:
                await c.aclose()
                await proxy.close()

    try:
        run(body)
    finally:
        admin.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_connect_is_retried_for_a_write(
    redis_url: str, prefix: str, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"{prefix}:x"
    failures: list[int] = []
    serving: list[asyncio.Task[None]] = []

    async def body() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound, not listening: a connect is refused
        proxy = DropProxy(_upstream(redis_url))
        port = await proxy.start(sock, serving=False)
        server = proxy.server
        assert server is not None
        loop = asyncio.get_running_loop()

        class OpenAfterFailure(ExponentialWithJitterBackoff):
            """The backoff before a second attempt: the server starts to listen now."""

            def compute(self, failures_so_far: int) -> float:
                failures.append(failures_so_far)
                sock.listen(8)
                serving.append(loop.create_task(server.start_serving()))
                return 0.0

        monkeypatch.setattr(retry, "BACKOFF", OpenAfterFailure(0.05, 1.0))
        c = async_client(_via(port), transport=transport)
        try:
            assert isinstance(await c.xadd(stream, {"f": "1"}), str)
        finally:
            await c.aclose()
            await proxy.close()

    try:
        run(body)
        assert failures == [1]  # refused once, sent on the second attempt
        assert admin.xlen(stream) == 1
    finally:
        admin.close()


def test_the_rule() -> None:
    assert retry.read_only("GET") and retry.read_only(b"hgetall") and retry.read_only("XREAD")
    assert retry.read_only("XINFO STREAM") and retry.read_only("ZRANGEBYSCORE")
    for write in ("SET", "XADD", "HSET", "EVALSHA", "EVAL", "XACK", "XREADGROUP", "EXEC"):
        assert not retry.read_only(write)
    lost = redis.exceptions.ConnectionError("lost")
    assert retry.may_retry(lost, ["GET", "HMGET"])
    assert not retry.may_retry(lost, ["GET", "XADD"])
    assert retry.may_retry(retry.NotSent("refused"), ["XADD"])
    assert not retry.may_retry(redis.exceptions.AuthenticationError("no"), ["GET"])
    assert not retry.may_retry(redis.exceptions.ResponseError("ERR"), ["GET"])


def test_the_blocking_client_follows_the_rule(redis_url: str, prefix: str) -> None:
    """The CLI's client: a write whose reply is lost is not resent; a read is."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    stream, key = f"{prefix}:x", f"{prefix}:h"
    admin.hset(key, mapping={"a": "1"})

    async def body() -> None:
        for marker in (stream, key):
            proxy = DropProxy(_upstream(redis_url), drop_on=marker.encode())
            c = sync_client(_via(await proxy.start()))
            try:
                assert await asyncio.to_thread(c.ping) is True
                if marker == stream:
                    with pytest.raises(redis.exceptions.ConnectionError):
                        await asyncio.to_thread(c.xadd, stream, {"f": "1"})
                else:
                    assert await asyncio.to_thread(c.hgetall, key) == {"a": "1"}
                assert proxy.dropped == 1
            finally:
                c.close()
                await proxy.close()

    try:
        run(body)
        assert admin.xlen(stream) == 1
    finally:
        admin.close()
