"""A stream entry whose bytes are not UTF-8 costs one dead letter, never a stuck group.

The service runner reads entries raw and decodes each in the step that dead-letters, on
redis-py's pooled transport (Sentinel, TLS) and on the lean one (plain URLs), first reads and
reclaims, in each consumer mode; the Redis Cluster client is covered in tests/cluster.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from permitchain.keys import Keys
from permitchain.lean import LeanRedis
from permitchain.store import async_client
from tests.reliability.poison import MODES, check, feed_poison


def client(url: str, transport: str) -> aioredis.Redis:
    if transport == "lean":
        c = async_client(url)
        assert isinstance(c, LeanRedis) and c.lean is not None
        return c
    return aioredis.Redis.from_url(url, decode_responses=True)


@pytest.mark.parametrize("reclaim", [False, True], ids=["read", "reclaimed"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["lean", "pool"])
def test_poison_entry_is_one_dead_letter_and_the_group_moves_on(
    redis_url: str, keys: Keys, transport: str, mode: str, reclaim: bool
) -> None:
    out = asyncio.run(feed_poison(client(redis_url, transport), keys, mode, reclaim=reclaim))
    check(out, f"poison.{mode}")
