"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncGate`, the same API as
:mod:`permitchain_client.sync` with ``await``: the same flows of
:mod:`permitchain_client.flows`, run here on ``redis.asyncio.Redis``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio
import redis.exceptions

from permitchain_client import flows
from permitchain_client.flows import Chain, Flow, Steps

P = ParamSpec("P")
T = TypeVar("T")
Coro = Coroutine[Any, Any, T]  # what an `async def` returns


def method(
    flow: Callable[Concatenate[Chain[redis.asyncio.Redis], P], Flow[T]],
) -> Callable[Concatenate[AsyncClient, P], Coro[T]]:
    """A flow as a coroutine method of :class:`AsyncClient`, run on its Redis."""

    @flows.method_of(flow)
    async def call(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(flow(self, *args, **kwargs))

    return call


def gate_method(
    flow: Callable[Concatenate[Chain[redis.asyncio.Redis], P], Flow[T]],
) -> Callable[Concatenate[AsyncGate, P], Coro[T]]:
    """A flow as a coroutine method of :class:`AsyncGate`, run on its client's Redis."""

    @flows.method_of(flow)
    async def call(self: AsyncGate, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.client.run(flow(self.client, *args, **kwargs))

    return call


class AsyncClient(Chain[redis.asyncio.Redis]):
    """A connection to one chain (one Redis, one key prefix), for asyncio."""

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> AsyncClient:
        """``redis://``, ``rediss://`` or ``unix://`` (a Redis Cluster is not supported)."""
        client = redis.asyncio.Redis.from_url(
            flows.checked_url(url), decode_responses=True, socket_timeout=10
        )
        return cls(client, **kw)

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def run(self, flow: Flow[T]) -> T:
        """Make the flow's calls on this client's Redis, one after the other."""
        steps = Steps(flow)
        while steps.call is not None:
            try:
                reply = await steps.call(self.redis)
            except redis.exceptions.RedisError as e:
                steps.fail(e)
            else:
                steps.reply(reply)
        return steps.result

    @functools.cached_property
    def gate(self) -> AsyncGate:
        return AsyncGate(self)

    check_schema = method(flows.check_schema)
    propose = method(flows.propose)
    wait_result = method(flows.wait_result)
    explain = method(flows.explain)
    trading_state = method(flows.trading_state)


class AsyncGate:
    """The gate for external executors: claim a plan's grant, send the order yourself with
    its quantity and client order id, then report the outcome (docs/integrations.md)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    claim = gate_method(flows.claim)
    report = gate_method(flows.report)
