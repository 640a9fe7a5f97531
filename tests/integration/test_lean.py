"""The lean transport (permitchain.store.lean) against a real server: the same answers and errors
as redis-py's own transport, blocking reads kept off it, losses and hangs fail fast."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions

from permitchain.store import async_client, lean


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


async def _sequence(c: Any, p: str) -> list[Any]:
    """Commands the chain uses, with their redis-py answer shapes."""
    out: list[Any] = []
    out.append(await c.set(f"{p}:s", "v", nx=True, ex=60))
    out.append(await c.set(f"{p}:s", "w", nx=True, ex=60))  # None: exists
    out.append(await c.get(f"{p}:s"))
    out.append(await c.hset(f"{p}:h", mapping={"a": "1", "b": "2"}))
    out.append(await c.hgetall(f"{p}:h"))
    out.append(await c.hgetall(f"{p}:missing"))
    out.append(await c.zadd(f"{p}:z", {"m1": 1.5, "m2": 2}))
    out.append(await c.zrange(f"{p}:z", 0, -1, withscores=True))
    out.append(await c.zrangebyscore(f"{p}:z", "-inf", 2, start=0, num=10))
    out.append(await c.expire(f"{p}:h", 60))
    out.append(await c.exists(f"{p}:h", f"{p}:nope"))
    out.append(await c.incr(f"{p}:n"))
    sid = await c.xadd(f"{p}:x", {"f": "1"}, maxlen=10, approximate=True)
    out.append(isinstance(sid, str))
    out.append([f for _i, f in await c.xrange(f"{p}:x")])
    await c.xgroup_create(f"{p}:x", "g", id="0")
    got = await c.xreadgroup("g", "c1", {f"{p}:x": ">"}, count=10)  # no BLOCK: lean
    out.append([(s, [f for _i, f in es]) for s, es in got])
    out.append(await c.xreadgroup("g", "c1", {f"{p}:x": ">"}, count=10, block=20))  # timeout
    await c.xadd(f"{p}:x", {"f": "2"})
    got = await c.xreadgroup("g", "c1", {f"{p}:x": ">"}, count=10, block=1000)  # a lane
    out.append([(s, [f for _i, f in es]) for s, es in got])
    out.append(await c.xread({f"{p}:x": "$"}, block=20))  # timeout
    out.append(await c.xack(f"{p}:x", "g", sid))
    out.append(await c.xinfo_stream(f"{p}:x") is not None)
    out.append(await c.ttl(f"{p}:missing"))
    out.append(await c.delete(f"{p}:n"))
    script = c.register_script("return {KEYS[1], ARGV[1]}")
    out.append(await script(keys=[f"{p}:k"], args=["a"]))
    pipe = c.pipeline(transaction=False)
    pipe.get(f"{p}:s")
    pipe.hgetall(f"{p}:h")
    pipe.execute_command("GET", f"{p}:s", NEVER_DECODE=True)
    await script(keys=[f"{p}:k"], args=["b"], client=pipe)
    out.append(await pipe.execute())
    return [p_strip(v, p) for v in out]


def p_strip(v: Any, p: str) -> Any:
    """Key names differ by prefix between the two runs."""
    if isinstance(v, str):
        return v.replace(p, "P")
    if isinstance(v, list | tuple):
        return type(v)(p_strip(x, p) for x in v)
    return v


def test_same_answers_as_redis_py(redis_url: str, prefix: str) -> None:
    async def body() -> tuple[list[Any], list[Any]]:
        fast = async_client(redis_url)
        plain = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert isinstance(fast, lean.LeanRedis) and fast.lean is not None
            return await _sequence(fast, f"{prefix}:a"), await _sequence(plain, f"{prefix}:b")
        finally:
            await fast.aclose()
            await plain.aclose()

    got, want = run(body)
    assert got == want
    assert got[0] is True and got[1] is None and got[4] == {"a": "1", "b": "2"}
    assert got[7] == [("m1", 1.5), ("m2", 2.0)]
    assert got[-1] == ["v", {"a": "1", "b": "2"}, b"v", ["P:k", "b"]]


def test_errors_are_redis_py_exceptions(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        c = async_client(redis_url)
        try:
            await c.set(f"{prefix}:str", "x")
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await c.hgetall(f"{prefix}:str")
            with pytest.raises(redis.exceptions.DataError):
                await c.set(f"{prefix}:k", True)  # type: ignore[arg-type]
            with pytest.raises(redis.exceptions.DataError):
                await c.set(f"{prefix}:k", Decimal("1"))  # type: ignore[arg-type]
            pipe = c.pipeline(transaction=False)
            pipe.get(f"{prefix}:str")
            pipe.hgetall(f"{prefix}:str")
            pipe.get(f"{prefix}:str")
            ok, err, ok2 = await pipe.execute(raise_on_error=False)
            assert ok == ok2 == "x" and isinstance(err, redis.exceptions.ResponseError)
            pipe.hgetall(f"{prefix}:str")
            with pytest.raises(redis.exceptions.ResponseError, match="Command # 1"):
                await pipe.execute()
            # a value that is not UTF-8: decoding fails for that reply only, as in redis-py
            await c.set(f"{prefix}:bin", b"\xff\xfe")
            with pytest.raises(UnicodeDecodeError):
                await c.get(f"{prefix}:bin")
            assert await c.execute_command("GET", f"{prefix}:bin", NEVER_DECODE=True) == b"\xff\xfe"
            assert await c.get(f"{prefix}:str") == "x"  # the connection is still in step
        finally:
            await c.aclose()

    run(body)


def test_scripts_survive_a_script_flush(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        c = async_client(redis_url)
        admin = redis.Redis.from_url(redis_url)
        try:
            s = c.register_script("return ARGV[1]")
            assert await s(keys=[f"{prefix}:k"], args=["1"]) == "1"
            pipe = c.pipeline(transaction=False)
            await s(keys=[f"{prefix}:k"], args=["2"], client=pipe)
            assert await pipe.execute() == ["2"]
            admin.script_flush()  # e.g. a server restart: single calls reload on NOSCRIPT
            assert await s(keys=[f"{prefix}:k"], args=["3"]) == "3"
            admin.script_flush()  # a pipeline loads its scripts ahead of them, every time
            pipe = c.pipeline(transaction=False)
            pipe.incr(f"{prefix}:n")
            await s(keys=[f"{prefix}:k"], args=["4"], client=pipe)
            assert await pipe.execute() == [1, "4"]
        finally:
            admin.close()
            await c.aclose()

    run(body)


def test_blocking_reads_do_not_hold_the_lean_connection(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        c = async_client(redis_url)
        try:
            await c.xadd(f"{prefix}:x", {"f": "0"})
            reader = asyncio.create_task(c.xread({f"{prefix}:x": "$"}, block=3000))
            await asyncio.sleep(0)  # the blocking read is sent
            # while it blocks, lean commands are answered (they do not queue behind it)
            for i in range(20):
                assert await c.incr(f"{prefix}:n") == i + 1
            assert not reader.done()
            await c.xadd(f"{prefix}:x", {"f": "1"})
            got = await asyncio.wait_for(reader, 3)
            assert [f for _s, es in got for _i, f in es] == [{"f": "1"}]
        finally:
            await c.aclose()

    run(body)
    assert not lean.lean_ok(["XREADGROUP", "GROUP", "g", "c", b"BLOCK", 1000, b"STREAMS", "s"])
    assert lean.block_ms(["XREADGROUP", "GROUP", "g", "c", b"BLOCK", 1000, b"STREAMS", "s"]) == 1000
    assert lean.lean_ok(["XREADGROUP", "GROUP", "g", "c", b"COUNT", 10, b"STREAMS", "s", "0"])
    assert not lean.lean_ok(["WATCH", "k"]) and not lean.lean_ok(["CLIENT LIST"])


def test_a_cancelled_blocking_read_drops_its_lane(redis_url: str, prefix: str) -> None:
    async def body() -> None:
        c = async_client(redis_url)
        try:
            assert isinstance(c, lean.LeanRedis)
            await c.xread({f"{prefix}:x": "$"}, block=10)
            assert len(c.lanes) == 1  # a completed read returns its lane
            t = asyncio.create_task(c.xread({f"{prefix}:x": "$"}, block=5000))
            await asyncio.sleep(0.05)
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
            assert c.lanes == []  # its reply may still come: the lane is dropped, not reused
            await c.xadd(f"{prefix}:x", {"f": "1"})
            got = await c.xread({f"{prefix}:x": "0-0"}, block=1000)
            assert [f for _s, es in got for _i, f in es] == [{"f": "1"}]
        finally:
            await c.aclose()

    run(body)


def test_a_lost_connection_fails_in_flight_commands_and_reconnects(redis_url: str) -> None:
    async def body() -> None:
        c = async_client(redis_url)
        admin = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert await c.ping() is True
            ids = [cl["id"] for cl in admin.client_list() if cl["name"] == lean.CLIENT_NAME]
            assert ids
            for i in ids:
                admin.client_kill_filter(_id=i)
            # the next commands fail with a store fault until the loss is seen, then reconnect
            outcomes = []
            for _ in range(5):
                try:
                    outcomes.append(await c.ping())
                except redis.exceptions.ConnectionError:
                    outcomes.append("lost")
            assert outcomes[-1] is True
        finally:
            admin.close()
            await c.aclose()

    run(body)


def test_a_server_that_stops_answering_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean, "COMMAND_TIMEOUT_S", 0.3)

    async def body() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while await reader.read(1024):
                    pass  # reads everything, answers nothing
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = lean.Lean("127.0.0.1", port)
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await asyncio.wait_for(c.call(["PING"]), 5)  # CLIENT SETNAME hangs first
        finally:
            server.close()
            await server.wait_closed()

    run(body)
