"""A stream entry whose bytes are not UTF-8 costs one dead letter, never a stuck group.

The service runner reads entries raw and decodes each in the step that dead-letters, on
redis-py's pooled transport (Sentinel, TLS) and on the lean one (plain URLs), first reads and
reclaims, in each consumer mode; the Redis Cluster client is covered in tests/cluster.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import Redis

from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.runtime.service import Consumer, ServiceRunner, ensure_group
from permitchain.store import async_client
from permitchain.store.lean import LeanRedis
from tests.apply_layer.bench import Bench, plan_for
from tests.apply_layer.test_permit_events import fresh_id
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


def test_poison_permit_event_is_skipped_and_later_events_still_wake(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    """The executor's permit-event reader (XREAD, no group): an event that is not UTF-8 is
    skipped with a line; the events after it are read, so a fresh plan is consumed on them,
    not at its deadline (60 s here: the test would time out)."""
    plan = plan_for(41)
    patient = settings.model_copy(update={"permit_wait_ms": 60_000})

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, patient) as b:
            task = asyncio.create_task(b.ex.handle(fresh_id(), plan.to_fields()))
            await b.until_waiting(plan.plan_id)
            poison = plan.plan_id.encode() + b"\xff"
            await r.execute_command(
                "XADD", keys.permit_event_stream, "*", "plan_id", poison, "layer", "governor"
            )
            await b.gov(plan)
            await b.p33(plan)
            await asyncio.wait_for(task, 10)
            return await b.result(plan.plan_id)

    assert arun(body)["status"] == "filled"


def test_a_stream_key_of_the_wrong_type_is_named_until_removed(redis_url: str, keys: Keys) -> None:
    """Nothing can be read from a stream key holding another type: the runner says so, by
    name, keeps running, and reads the stream once an operator has removed the key."""
    stream = f"{keys.prefix}:stream:typed"
    line = f"key {stream} is a string, expected a stream"

    class Named(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.ERROR)
            self.seen = asyncio.Event()

        def emit(self, record: logging.LogRecord) -> None:
            if line in record.getMessage():
                self.seen.set()

    async def body() -> list[str]:
        r = async_client(redis_url)
        await r.set(stream, "banana")
        handled: list[str] = []
        got = asyncio.Event()

        async def handler(entry_id: str, fields: dict[str, str]) -> None:
            handled.append(fields["n"])
            got.set()

        named = Named()
        logging.getLogger("permitchain.runtime").addHandler(named)
        runner = ServiceRunner(
            "typed-test",
            r,
            keys,
            consumers=[Consumer(stream, "g", handler, block_ms=100, claim_every_s=0.05)],
        )
        task = asyncio.create_task(runner.run())
        try:
            await asyncio.wait_for(named.seen.wait(), 20)
            await r.delete(stream)  # the operator removes it (the group: as the runner does)
            await ensure_group(r, stream, "g")
            await r.xadd(stream, {"n": "1"})
            await asyncio.wait_for(got.wait(), 20)
        finally:
            logging.getLogger("permitchain.runtime").removeHandler(named)
            runner.stop.set()
            await asyncio.wait_for(task, 20)
        return handled

    assert asyncio.run(body()) == ["1"]
