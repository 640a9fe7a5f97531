"""The blocking client: :class:`Client` and its :class:`Gate`::

client = Client.from_url("redis://127.0.0.1:6379/0", source="my-bot")
plan_id = client.propose("BTCUSDT", "PARTIAL_50", kill_score="0.7", tranche=1)
client.wait_result(plan_id, timeout=10).status        # 'filled', 'blocked', 'skipped', …

Each call is a flow of :mod:`permitchain_client.flows`, run here on ``redis.Redis``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis
import redis.exceptions

from permitchain_client import flows
from permitchain_client.flows import Chain, Flow, Steps

P = ParamSpec("P")
T = TypeVar("T")


def method(
    flow: Callable[Concatenate[Chain[redis.Redis], P], Flow[T]],
) -> Callable[Concatenate[Client, P], T]:
    """A flow as a method of :class:`Client`, run on its Redis."""

    @flows.method_of(flow)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(flow(self, *args, **kwargs))

    return call


def gate_method(
    flow: Callable[Concatenate[Chain[redis.Redis], P], Flow[T]],
) -> Callable[Concatenate[Gate, P], T]:
    """A flow as a method of :class:`Gate`, run on its client's Redis."""

    @flows.method_of(flow)
    def call(self: Gate, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.client.run(flow(self.client, *args, **kwargs))

    return call


class Client(Chain[redis.Redis]):
    """A connection to one chain (one Redis, one key prefix)."""

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> Client:
        """``redis://``, ``rediss://`` or ``unix://`` (a Redis Cluster is not supported)."""
        client = redis.Redis.from_url(
            flows.checked_url(url), decode_responses=True, socket_timeout=10
        )
        return cls(client, **kw)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run(self, flow: Flow[T]) -> T:
        """Make the flow's calls on this client's Redis, one after the other."""
        steps = Steps(flow)
        while steps.call is not None:
            try:
                reply = steps.call(self.redis)
            except redis.exceptions.RedisError as e:
                steps.fail(e)
            else:
                steps.reply(reply)
        return steps.result

    @functools.cached_property
    def gate(self) -> Gate:
        return Gate(self)

    check_schema = method(flows.check_schema)
    propose = method(flows.propose)
    wait_result = method(flows.wait_result)
    explain = method(flows.explain)
    trading_state = method(flows.trading_state)


class Gate:
    """The gate for external executors: claim a plan's grant, send the order yourself with
    its quantity and client order id, then report the outcome (docs/integrations.md)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    claim = gate_method(flows.claim)
    report = gate_method(flows.report)
