"""The sync and asyncio clients are one set of flows run by two drivers: the same calls,
signatures and docstrings on both faces, and the same stepping (replies sent in, Redis
errors thrown in where the call was yielded). No Redis needed: no call here reaches one."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions

from permitchain_client import AsyncClient, AsyncGate, Client, Gate

CLIENT_CALLS = ("check_schema", "propose", "wait_result", "explain", "trading_state")
GATE_CALLS = ("claim", "report")


@pytest.mark.parametrize(
    ("blocking", "awaiting", "names"),
    [(Client, AsyncClient, CLIENT_CALLS), (Gate, AsyncGate, GATE_CALLS)],
)
def test_both_faces_have_the_same_calls(
    blocking: type, awaiting: type, names: tuple[str, ...]
) -> None:
    for name in names:
        sync_call, async_call = getattr(blocking, name), getattr(awaiting, name)
        assert inspect.signature(sync_call) == inspect.signature(async_call)
        assert next(iter(inspect.signature(sync_call).parameters)) == "self"
        assert sync_call.__doc__ and sync_call.__doc__ == async_call.__doc__
        assert not inspect.iscoroutinefunction(sync_call)
        assert inspect.iscoroutinefunction(async_call)
        assert sync_call.__qualname__ == f"{blocking.__name__}.{name}"


def replies(make: Callable[[str], object]) -> Generator[Callable[[object], Any], Any, list[str]]:
    """A flow: a call that fails with a Redis error (handled), one that fails with another
    error (passed on), then two replies."""
    seen = []

    def wrong_type(_r: object) -> object:
        raise redis.exceptions.ResponseError("WRONGTYPE")

    try:
        yield wrong_type
    except redis.exceptions.ResponseError as e:
        seen.append(f"thrown {e}")
    seen.append((yield lambda _r: make("one")))
    seen.append((yield lambda _r: make("two")))
    return seen


def test_the_blocking_driver_steps_a_flow() -> None:
    client = Client(redis.Redis(host="127.0.0.1", port=1))
    assert client.run(replies(str)) == ["thrown WRONGTYPE", "one", "two"]
    assert client.gate.run(replies(str)) == ["thrown WRONGTYPE", "one", "two"]


def test_the_asyncio_driver_steps_a_flow() -> None:
    async def later(value: str) -> str:
        return value

    def coroutine(value: str) -> Coroutine[Any, Any, str]:
        return later(value)

    async def main() -> None:
        client = AsyncClient(redis.asyncio.Redis(host="127.0.0.1", port=1))
        assert await client.run(replies(coroutine)) == ["thrown WRONGTYPE", "one", "two"]
        assert await client.gate.run(replies(coroutine)) == ["thrown WRONGTYPE", "one", "two"]

    asyncio.run(main())


def test_an_error_that_is_not_redis_s_is_not_thrown_into_the_flow() -> None:
    thrown: list[BaseException] = []

    def flow() -> Generator[Callable[[object], Any], Any, None]:
        try:
            yield lambda _r: 1 / 0
        except Exception as e:  # the test: nothing may arrive here
            thrown.append(e)

    with pytest.raises(ZeroDivisionError):
        Client(redis.Redis(host="127.0.0.1", port=1)).run(flow())
    assert thrown == []
