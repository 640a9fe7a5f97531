"""The typed client protocols (``permitchain.store.protocol``) against redis-py's real clients.

mypy holds the code to the protocols (a command they do not list does not type-check); these
tests hold the protocols to the clients the builders return: every member is there, and every
parameter name a protocol method takes is one the real method takes. No server is needed: the
clients connect on their first command, and none is sent.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.client
import redis.asyncio.cluster
import redis.client
import redis.cluster

from permitchain.store import async_client, sync_client
from permitchain.store.lean import LeanPipeline, LeanRedis
from permitchain.store.protocol import AsyncPipeline, AsyncRedis, AsyncScript, SyncRedis

#: A closed port: nothing is ever sent there.
NOWHERE = "127.0.0.1:1"
ASYNC_URLS = {
    "lean": f"redis://{NOWHERE}/0",
    "sentinel": f"redis+sentinel://{NOWHERE}/mymaster",
    "cluster": f"redis+cluster://{NOWHERE}",
}


def members(proto: type) -> list[str]:
    """The names a protocol lists: its methods and attributes (``__call__`` its one dunder)."""
    own = vars(proto)
    names = {n for n in own if not n.startswith("_")} | set(own.get("__annotations__", {}))
    return sorted(names | ({"__call__"} & own.keys()))


def missing(obj: object, proto: type) -> list[str]:
    return [name for name in members(proto) if not hasattr(obj, name)]


def signatures(proto: type, name: str) -> Iterator[inspect.Signature]:
    """The signature of ``proto.name``, or of each of its overloads."""
    fn = getattr(proto, name)

    def stand_in() -> None:  # an overloaded name holds a dummy: its overloads are found by name
        """``proto.name``, for :func:`typing.get_overloads`."""

    stand_in.__module__, stand_in.__qualname__ = proto.__module__, f"{proto.__qualname__}.{name}"
    for f in typing.get_overloads(stand_in) or [fn]:
        yield inspect.signature(f)


def positional(params: Iterable[inspect.Parameter]) -> list[str]:
    return [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]


def unknown_parameters(obj: object, proto: type) -> list[str]:
    """``method(param)`` for each parameter a protocol method names that the real one lacks,
    or holds at another position (a call typed against the protocol would send the wrong
    arguments, or fail, at run time)."""
    out = []
    for name in members(proto):
        real = getattr(obj, name, None)
        if not callable(real) or name.startswith("__"):
            continue
        real_params = inspect.signature(real).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in real_params.values())
        real_order = positional(real_params.values())
        for sig in signatures(proto, name):
            params = list(sig.parameters.values())[1:]  # after self
            for p in params:
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.name not in real_params and not takes_kwargs:
                    out.append(f"{name}({p.name})")
            order = positional(params)
            # a method that forwards (``*args, **kwargs``: a cluster pipeline's) takes any
            if real_order[: len(order)] != order and not (takes_kwargs and not real_order):
                out.append(f"{name}({', '.join(order)}) against ({', '.join(real_order)})")
    return sorted(set(out))


@pytest.fixture(params=sorted(ASYNC_URLS))
def async_clients(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A built client of each kind, its pipelines (plain and transaction) and a script."""
    loop = asyncio.new_event_loop()
    client = async_client(ASYNC_URLS[request.param])
    built = {
        "client": client,
        "pipelines": [client.pipeline(transaction=False), client.pipeline(transaction=True)],
        "script": client.register_script("return 1"),
    }
    yield built
    loop.run_until_complete(client.aclose())
    loop.close()


def test_the_builders_return_what_the_protocols_state(async_clients: dict[str, Any]) -> None:
    client = async_clients["client"]
    assert missing(client, AsyncRedis) == []
    assert isinstance(client, AsyncRedis)
    assert unknown_parameters(client, AsyncRedis) == []
    for pipe in async_clients["pipelines"]:
        assert missing(pipe, AsyncPipeline) == [], type(pipe)
        assert isinstance(pipe, AsyncPipeline)
        assert unknown_parameters(pipe, AsyncPipeline) == [], type(pipe)
    assert missing(async_clients["script"], AsyncScript) == []
    assert isinstance(async_clients["script"], AsyncScript)


def test_the_builders_make_each_kind_of_client() -> None:
    """The fixture's URLs give the three client classes the protocol stands for."""
    loop = asyncio.new_event_loop()
    try:
        kinds = {}
        for kind, url in ASYNC_URLS.items():
            client = async_client(url)
            kinds[kind] = client
            loop.run_until_complete(client.aclose())
        assert isinstance(kinds["lean"], LeanRedis) and kinds["lean"].lean is not None
        assert isinstance(kinds["lean"].pipeline(transaction=False), LeanPipeline)
        assert isinstance(kinds["sentinel"], redis.asyncio.client.Redis)
        assert isinstance(kinds["cluster"], redis.asyncio.cluster.RedisCluster)
    finally:
        loop.close()


@pytest.mark.parametrize(
    "cls",
    [
        redis.asyncio.client.Redis,
        LeanRedis,
        redis.asyncio.cluster.RedisCluster,
    ],
)
def test_every_asyncio_client_class_has_the_protocol(cls: type) -> None:
    assert missing(cls, AsyncRedis) == []
    assert unknown_parameters(cls, AsyncRedis) == []


@pytest.mark.parametrize(
    "cls",
    [redis.asyncio.client.Pipeline, LeanPipeline, redis.asyncio.cluster.ClusterPipeline],
)
def test_every_asyncio_pipeline_class_has_the_protocol(cls: type) -> None:
    assert missing(cls, AsyncPipeline) == []
    assert unknown_parameters(cls, AsyncPipeline) == []


@pytest.mark.parametrize("cls", [redis.client.Redis, redis.cluster.RedisCluster])
def test_every_blocking_client_class_has_the_protocol(cls: type) -> None:
    assert missing(cls, SyncRedis) == []
    assert unknown_parameters(cls, SyncRedis) == []


@pytest.mark.parametrize("url", [f"redis://{NOWHERE}/0", f"redis+sentinel://{NOWHERE}/m"])
def test_the_blocking_builder_returns_what_the_protocol_states(url: str) -> None:
    client = sync_client(url)
    try:
        assert isinstance(client, SyncRedis)
        assert unknown_parameters(client, SyncRedis) == []
    finally:
        client.close()


def test_the_checks_can_fail() -> None:
    """A protocol member the client lacks, or a parameter name it does not take, is found."""
    assert {"hgetall", "set", "pipeline", "aclose"} <= set(members(AsyncRedis))
    assert {"execute", "xadd"} <= set(members(AsyncPipeline))
    assert members(AsyncScript) == ["__call__", "script", "sha"]

    class Short:
        async def get(self, key: str) -> str | None:  # redis-py names it ``name``
            return None

    assert "hgetall" in missing(Short(), AsyncRedis)
    assert not isinstance(Short(), AsyncRedis)
    assert "get(name)" in unknown_parameters(Short(), AsyncRedis)

    class Swapped:
        async def xrevrange(self, name: str, min: str = "-", max: str = "+") -> list[Any]:
            return []

    assert "xrevrange(name, max, min, count) against (name, min, max)" in unknown_parameters(
        Swapped(), AsyncRedis
    )
