"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncGate`, the same API as
:mod:`permitchain_client.sync` with ``await``: the same flows of
:mod:`permitchain_client.flows`, run here on ``redis.asyncio.Redis``."""

from __future__ import annotations

import functools
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio

from permitchain_client.calls import Calls, GateCalls
from permitchain_client.core import Flow, Steps, checked_url

T = TypeVar("T")


class AsyncClient(Calls[redis.asyncio.Redis]):
    """A connection to one chain (one Redis, one key prefix), for asyncio."""

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> AsyncClient:
        """``redis://``, ``rediss://`` or ``unix://`` (a Redis Cluster is not supported)."""
        client = redis.asyncio.Redis.from_url(
            checked_url(url), decode_responses=True, socket_timeout=10
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

    @functools.cached_property
    def gate(self) -> AsyncGate:
        return AsyncGate(self)

    async def run(self, flow: Flow[T]) -> T:
        """Make the flow's calls on this client's Redis, one after the other."""
        steps = Steps(flow)
        while steps.call is not None:
            with steps:
                steps.reply = await steps.call(self.redis)
        return steps.result


class AsyncGate(GateCalls[AsyncClient]):
    """The gate for external executors: claim a plan's grant, send the order yourself with
    its quantity and client order id, then report the outcome (docs/integrations.md)."""

    async def run(self, flow: Flow[T]) -> T:
        return await self.client.run(flow)
