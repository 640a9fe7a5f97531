"""A service runner in-process, fed a stream entry whose bytes are not UTF-8 among good ones.

Shared by the plain-server tests (pooled and lean transports) and the Redis Cluster tests:
the runner must dead-letter the poison entry (its bytes escaped), acknowledge it, and handle
every other entry, first-read or reclaimed from a dead peer, in each consumer mode.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.runtime.service import Consumer, ServiceRunner, by_symbol, ensure_group

POISON_SYMBOL = b"BTC\xffUSDT"
MODES = ("sequential", "partitioned", "concurrent")


@dataclass
class Outcome:
    handled: list[str] = field(default_factory=list)
    deadletters: list[dict[str, str]] = field(default_factory=list)
    pending: int = -1


def consumer(stream: str, mode: str, handler: Any) -> Consumer:
    return Consumer(
        stream,
        "g",
        handler,
        block_ms=100,
        claim_idle_ms=50,
        claim_every_s=0.05,
        concurrent=mode == "concurrent",
        partition=by_symbol if mode == "partitioned" else None,
    )


async def feed_poison(r: Any, keys: Keys, mode: str, *, reclaim: bool = False) -> Outcome:
    """Run a runner on ``r`` (it closes it) over a stream holding a poison entry between good
    ones. ``reclaim``: the entries were first read by a peer that died (pending to it), so
    the runner gets them through XAUTOCLAIM, not XREADGROUP."""
    stream = f"{keys.prefix}:stream:poison.{mode}"
    out = Outcome()
    done = asyncio.Event()

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        out.handled.append(fields["n"])
        if len(out.handled) == 2:
            done.set()

    await ensure_group(r, stream, "g")
    await r.xadd(stream, {"n": "1", "symbol": "ETHUSDT"})
    await r.execute_command("XADD", stream, "*", "n", "2", "symbol", POISON_SYMBOL)
    await r.xadd(stream, {"n": "3", "symbol": "ETHUSDT"})
    if reclaim:  # a peer reads them raw and dies before acknowledging any
        await r.execute_command(
            "XREADGROUP",
            "GROUP",
            "g",
            "dead-peer",
            "COUNT",
            10,
            "STREAMS",
            stream,
            ">",
            NEVER_DECODE=True,
        )
    runner = ServiceRunner("poison-test", r, keys, consumers=[consumer(stream, mode, handler)])
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(done.wait(), 20)
        # the poison's dead letter and the acks are written right after the handlers finish
        for _ in range(400):
            out.pending = int((await r.xpending(stream, "g"))["pending"])
            if out.pending == 0 and await r.xlen(keys.deadletter):
                break
            await asyncio.sleep(0.01)
        out.deadletters = [f for _i, f in await r.xrange(keys.deadletter)]
    finally:
        runner.stop.set()
        await asyncio.wait_for(task, 20)
    return out


def check(out: Outcome, stream_suffix: str) -> None:
    assert sorted(out.handled) == ["1", "3"], out.handled
    assert out.pending == 0
    assert len(out.deadletters) == 1, out.deadletters
    dl = out.deadletters[0]
    assert dl["source"].endswith(stream_suffix)
    assert dl["error"].startswith("not_utf8: field 'symbol'"), dl["error"]
    assert json.loads(dl["fields"]) == {"n": "2", "symbol": "BTC\\xffUSDT"}
