"""Typed reads for the ops commands. Our clients decode responses (``str``); redis-py's
annotations cover every client, so the casts live here, once. Stream entries are read raw
and decoded one by one (``runtime/entries.py``): an entry that is not UTF-8 is shown with
its bad bytes escaped, never a failed command."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.exceptions

from permitchain.runtime.entries import shown, xrange_raw
from permitchain.store import AsyncRedis, is_wrong_type, wrong_type
from permitchain.store.steps import steps_for

Entries = list[tuple[str, dict[str, str]]]


async def get(r: AsyncRedis, key: str) -> str | None:
    """GET; a key of another type is :class:`WrongTypeError` naming it."""
    try:
        return await r.get(key)
    except redis.exceptions.ResponseError as e:
        raise (await wrong_type(r, key, "string") if is_wrong_type(e) else e) from e


async def hgetall(r: AsyncRedis, key: str) -> dict[str, str]:
    """HGETALL; a key of another type is :class:`WrongTypeError` naming it."""
    try:
        return await r.hgetall(key)
    except redis.exceptions.ResponseError as e:
        raise (await wrong_type(r, key, "hash") if is_wrong_type(e) else e) from e


async def xrange(
    r: AsyncRedis, stream: str, lo: str = "-", hi: str = "+", count: int | None = None
) -> Entries:
    """Stream entries read raw, each decoded: bytes that are not UTF-8 shown escaped."""
    return shown(await xrange_raw(r, stream, lo, hi, count))


async def xrevrange(
    r: AsyncRedis, stream: str, hi: str = "+", lo: str = "-", count: int | None = None
) -> Entries:
    """:func:`xrange`, newest first."""
    return shown(await xrange_raw(r, stream, lo, hi, count, reverse=True))


async def last_ids(r: AsyncRedis, streams: Iterable[str]) -> dict[str, str]:
    """Where each stream stands now (its last entry id, ``0-0`` when empty): positions for
    :func:`xread` to follow them from (e.g. every shard of the result stream)."""
    out = {}
    for stream in streams:
        rows = await xrevrange(r, stream, count=1)
        out[stream] = str(rows[0][0]) if rows else "0-0"
    return out


async def xread(
    r: AsyncRedis, positions: dict[str, str], *, count: int, block_ms: int
) -> list[tuple[str, Entries]]:
    """XREAD over several streams, waiting up to ``block_ms`` for the first entry
    (:meth:`AtomicSteps.read_streams`: streams in different slots of a Redis Cluster are
    polled one by one)."""
    resp = await steps_for(r).read_streams(positions, count=count, block_ms=block_ms)
    return [(s, shown(es)) for s, es in resp]


async def xinfo_groups(r: AsyncRedis, stream: str) -> list[dict[str, Any]]:
    return await r.xinfo_groups(stream)


async def xpending(
    r: AsyncRedis, stream: str, group: str, lo: str = "-", hi: str = "+", count: int = 20
) -> list[dict[str, Any]]:
    return await r.xpending_range(stream, group, min=lo, max=hi, count=count)
