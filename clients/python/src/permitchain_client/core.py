"""How the client's flows (:mod:`permitchain_client.flows`) run on either Redis client: a
flow is a generator that yields the Redis calls to make and receives their replies (a Redis
error is thrown into it where the call was yielded); :class:`Steps` is how a driver steps
one, and :class:`FlowMethod` makes a flow a method of both clients::

    reply = yield lambda r: r.get(chain.keys.trading_state)   # in a flow
    steps.reply = steps.call(self.redis)                      # the sync driver
    steps.reply = await steps.call(self.redis)                # the asyncio driver
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast, overload

import redis
import redis.asyncio
import redis.exceptions
from redis.commands.core import AsyncScript, Script

from permitchain_client.contract import Keys
from permitchain_client.errors import ChainUnavailable, ContractError
from permitchain_client.watch import Memory, script_text

T = TypeVar("T")
P = ParamSpec("P")
Connection = redis.Redis | redis.asyncio.Redis
R = TypeVar("R", bound=Connection)
#: One Redis call: made on the driver's client, its value is the reply (on redis.asyncio, a
#: coroutine of it). redis-py types replies as ``Any``; the flows cast what they read.
Call = Callable[[Connection], Any]
Flow = Generator[Call, Any, T]


@contextmanager
def translated() -> Iterator[None]:
    """Redis's connection errors become :class:`ChainUnavailable` (the one boundary)."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise ChainUnavailable(f"redis: {e}") from e


def checked_url(url: str) -> str:
    """The URL, refused for a Redis Cluster (the gate's steps span slots)."""
    if "+cluster" in url.split("://", 1)[0]:
        raise ContractError(
            "permitchain-client: Redis Cluster URLs are not supported (the gate's steps span slots)"
        )
    return url


class Steps(Generic[T]):
    """A flow as its driver steps it: :attr:`call` is the call to make next (``None`` once the
    flow returned :attr:`result`). The driver makes it inside ``with steps:`` and sets
    :attr:`reply`; on leaving the block the reply goes to the flow, or the Redis error the
    call raised is thrown into it (where the flow handles or translates it)::

        steps = Steps(flow)
        while steps.call is not None:
            with steps:
                steps.reply = steps.call(self.redis)   # await …, on redis.asyncio
        return steps.result
    """

    def __init__(self, flow: Flow[T]) -> None:
        self.flow = flow
        self.reply: object = None
        self.result: T
        self.call: Call | None = self._advance(flow.send, None)

    def __enter__(self) -> Steps[T]:
        self.reply = None
        return self

    def __exit__(
        self, et: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if error is None:
            self.call = self._advance(self.flow.send, self.reply)
        elif isinstance(error, redis.exceptions.RedisError):
            self.call = self._advance(self.flow.throw, error)
        else:
            return False
        return True

    def _advance(self, step: Callable[[Any], Call], value: object) -> Call | None:
        try:
            return step(value)
        except StopIteration as done:
            self.result = cast("T", done.value)
            return None


def pipelined(*calls: Call) -> Call:
    """The calls in one pipeline (no transaction): the reply is the list of their replies."""

    def call(client: Connection) -> Any:
        pipe = client.pipeline(transaction=False)
        for each in calls:
            each(pipe)
        return pipe.execute()

    return call


class Chain(Generic[R]):
    """What a client holds of one chain: its Redis, the key names under its prefix, the
    gate's scripts, and the plans it proposed."""

    def __init__(
        self,
        client: R,
        *,
        key_prefix: str = "quantum",
        proposal_ttl_s: int = 60,
        source: str = "client",
        stream_shards: int | None = None,
    ) -> None:
        self.redis: R = client
        #: the shard count is the chain's (its heartbeats), learnt with the schema;
        #: ``stream_shards``, when given, must match it
        self.keys = Keys(key_prefix, shards=stream_shards or 1)
        self.stream_shards = stream_shards
        self.proposal_ttl_s = proposal_ttl_s
        self.source = source
        self.memory = Memory()
        self.schema: int | None = None
        self.claim_script: Script | AsyncScript = client.register_script(script_text("gate_claim"))
        self.report_script: Script | AsyncScript = client.register_script(
            script_text("gate_report")
        )


class Blocking(Protocol):
    """A client (or gate) whose ``run`` blocks until the flow is done."""

    def run(self, flow: Flow[T], /) -> T: ...


class Awaiting(Protocol):
    """A client (or gate) whose ``run`` is a coroutine."""

    def run(self, flow: Flow[T], /) -> Coroutine[Any, Any, T]: ...


class Gated(Protocol):
    """A gate: its client is the chain."""

    client: Chain[Any]


class FlowMethod(Generic[P, T]):
    """A flow as a method of both clients, written once: on a client whose ``run`` blocks the
    method blocks; on one whose ``run`` is a coroutine the method is one (as redis-py's
    commands serve its two clients). Its name, docstring and signature are the flow's."""

    def __init__(self, flow: Callable[Concatenate[Chain[Any], P], Flow[T]]) -> None:
        self.flow = flow
        self.methods: dict[type, Callable[..., object]] = {}

    def chain_of(self, obj: object) -> Chain[Any]:
        """The chain the flow runs on: the client itself."""
        return cast("Chain[Any]", obj)

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[..., object]: ...
    @overload
    def __get__(self, obj: Awaiting, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, obj: Blocking, owner: type) -> Callable[P, T]: ...
    def __get__(self, obj: object, owner: type) -> Callable[..., object]:
        method = self.methods.get(owner)
        if method is None:
            method = self.methods[owner] = self.method_for(owner)
        return method if obj is None else types.MethodType(method, obj)

    def method_for(self, owner: type) -> Callable[..., object]:
        """The method on ``owner``: a coroutine function if its ``run`` is one."""
        flow, chain_of = self.flow, self.chain_of

        async def awaiting(client: Awaiting, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await client.run(flow(chain_of(client), *args, **kwargs))

        def blocking(client: Blocking, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return client.run(flow(chain_of(client), *args, **kwargs))

        runs = cast("type[Blocking | Awaiting]", owner).run
        method = awaiting if inspect.iscoroutinefunction(runs) else blocking
        dress(method, flow, owner)
        return method


def dress(method: Callable[..., object], flow: Callable[..., Flow[object]], owner: type) -> None:
    """Gives the method the flow's name, docstring and signature, with ``self`` for the chain
    and the flow's value as what it returns."""
    signature = inspect.signature(flow)
    chain, *params = signature.parameters.values()
    functools.update_wrapper(method, flow)
    method.__qualname__ = f"{owner.__qualname__}.{flow.__name__}"
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[chain.replace(name="self", annotation=inspect.Parameter.empty), *params],
        return_annotation=str(signature.return_annotation).removeprefix("Flow[").removesuffix("]"),
    )


class GateMethod(FlowMethod[P, T]):
    """A flow as a method of both clients' gates: it runs on the gate's client."""

    def chain_of(self, obj: object) -> Chain[Any]:
        return cast("Gated", obj).client
