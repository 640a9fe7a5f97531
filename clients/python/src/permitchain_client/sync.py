"""The blocking client: :class:`Client` and its :class:`Gate`::

client = Client.from_url("redis://127.0.0.1:6379/0", source="my-bot")
plan_id = client.propose("BTCUSDT", "PARTIAL_50", kill_score="0.7", tranche=1)
client.wait_result(plan_id, timeout=10).status        # 'filled', 'blocked', 'skipped', …

Its calls are the flows of :mod:`permitchain_client.flows`, run here on ``redis.Redis``.
"""

from __future__ import annotations

import functools
from types import TracebackType
from typing import Any, TypeVar

import redis

from permitchain_client.calls import Calls, GateCalls
from permitchain_client.core import Flow, Steps, checked_url

T = TypeVar("T")


class Client(Calls[redis.Redis]):
    """A connection to one chain (one Redis, one key prefix)."""

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> Client:
        """``redis://``, ``rediss://`` or ``unix://`` (a Redis Cluster is not supported)."""
        return cls(
            redis.Redis.from_url(checked_url(url), decode_responses=True, socket_timeout=10), **kw
        )

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @functools.cached_property
    def gate(self) -> Gate:
        return Gate(self)

    def run(self, flow: Flow[T]) -> T:
        """Make the flow's calls on this client's Redis, one after the other."""
        steps = Steps(flow)
        while steps.call is not None:
            with steps:
                steps.reply = steps.call(self.redis)
        return steps.result


class Gate(GateCalls[Client]):
    """The gate for external executors: claim a plan's grant, send the order yourself with
    its quantity and client order id, then report the outcome (docs/integrations.md)."""

    def run(self, flow: Flow[T]) -> T:
        return self.client.run(flow)
