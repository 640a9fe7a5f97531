"""Typed reads for the ops commands. Our clients decode responses (``str``); redis-py's
annotations cover every client, so the casts live here, once. Stream entries are read raw
and decoded one by one (``runtime/entries.py``): an entry that is not UTF-8 is shown with
its bad bytes escaped, never a failed command."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, cast

import redis.exceptions
from redis.asyncio import Redis

from permitchain.runtime.entries import shown, xrange_raw, xread_raw
from permitchain.store import is_cluster, is_wrong_type, wrong_type

Entries = list[tuple[str, dict[str, str]]]


async def get(r: Redis, key: str) -> str | None:
    """GET; a key of another type is :class:`WrongTypeError` naming it."""
    try:
        return cast(str | None, await r.get(key))
    except redis.exceptions.ResponseError as e:
        raise (await wrong_type(r, key, "string") if is_wrong_type(e) else e) from e


async def hgetall(r: Redis, key: str) -> dict[str, str]:
    """HGETALL; a key of another type is :class:`WrongTypeError` naming it."""
    try:
        return cast(dict[str, str], await r.hgetall(key))
    except redis.exceptions.ResponseError as e:
        raise (await wrong_type(r, key, "hash") if is_wrong_type(e) else e) from e


async def xrange(
    r: Redis, stream: str, lo: str = "-", hi: str = "+", count: int | None = None
) -> Entries:
    """Stream entries read raw, each decoded: bytes that are not UTF-8 shown escaped."""
    return shown(await xrange_raw(r, stream, lo, hi, count))


async def xrevrange(
    r: Redis, stream: str, hi: str = "+", lo: str = "-", count: int | None = None
) -> Entries:
    """:func:`xrange`, newest first."""
    return shown(await xrange_raw(r, stream, lo, hi, count, reverse=True))


async def last_ids(r: Redis, streams: Iterable[str]) -> dict[str, str]:
    """Where each stream stands now (its last entry id, ``0-0`` when empty): positions for
    :func:`xread` to follow them from (e.g. every shard of the result stream)."""
    out = {}
    for stream in streams:
        rows = await xrevrange(r, stream, count=1)
        out[stream] = str(rows[0][0]) if rows else "0-0"
    return out


async def xread(
    r: Redis, positions: dict[str, str], *, count: int, block_ms: int
) -> list[tuple[str, Entries]]:
    """XREAD over several streams. On a Redis Cluster they may be in different slots, which
    one XREAD cannot span: each is read without blocking, polled until ``block_ms``."""
    if len(positions) > 1 and is_cluster(r):
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out: list[tuple[str, Entries]] = []
            for stream, last in positions.items():
                one = await xread_raw(r, {stream: last}, count=count, block_ms=None)
                out += [(s, shown(es)) for s, es in one]
            if out or time.monotonic() >= deadline:
                return out
            await asyncio.sleep(0.02)
    resp = await xread_raw(r, positions, count=count, block_ms=block_ms)
    return [(s, shown(es)) for s, es in resp]


async def xinfo_groups(r: Redis, stream: str) -> list[dict[str, Any]]:
    return await r.xinfo_groups(stream)


async def xpending(
    r: Redis, stream: str, group: str, lo: str = "-", hi: str = "+", count: int = 20
) -> list[dict[str, Any]]:
    rows = await r.xpending_range(stream, group, min=lo, max=hi, count=count)
    return cast(list[dict[str, Any]], rows)
