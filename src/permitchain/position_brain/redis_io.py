"""The position brain's few Redis idioms, typed: an optimistic transaction, and the casts
between redis-py's wide stub types and the ``str`` our clients (``decode_responses=True``)
actually return."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

S = TypeVar("S")
T = TypeVar("T")
Write = Callable[[Pipeline], object]


async def transact(
    r: Redis, watch: str, read: Callable[[Pipeline], Awaitable[S]],
    decide: Callable[[S], tuple[T, Write | None]],
) -> T:  # fmt: skip
    """Optimistic transaction on ``watch``: read, decide, write in MULTI; again on a conflict.
    ``decide`` returns its answer and the writes to queue (None: write nothing)."""
    async with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(watch)
                answer, write = decide(await read(pipe))
                if write is None:
                    return answer
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                write(pipe)
                await pipe.execute()
                return answer
            except WatchError:
                continue


def str_map(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash as read by our clients (``decode_responses=True``: all keys and values are str)."""
    return cast(dict[str, str], raw)


def text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def redis_fields(m: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    return dict(m.items())
