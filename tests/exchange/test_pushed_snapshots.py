"""P3.3's snapshots with pushed updates: written as the exchange pushes, fresh while the
stream is alive and synced (a full poll since it connected), left to age when it is down
(polling alone refreshes them then), synced again by a full poll when it comes back. On the
fake Binance through ccxt.pro and on the simulated exchange."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from permitchain.contract.errors import ExchangeUnavailable
from permitchain.contract.keys import Keys
from permitchain.exchange.base import Exchange
from permitchain.exchange.binance_stream import BinanceUserStream
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.stream import SimUserStream, UserStream
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.position_brain.pushed import PushedSnapshots
from permitchain.runtime.clock import SystemClock
from tests.exchange.binance_helpers import adapter
from tests.fakebinance import API_KEY, API_SECRET, FakeBinance

D = Decimal
SYM = "BTCUSDT"
WAIT_S = 10.0


@contextlib.asynccontextmanager
async def running(
    r: Any, keys: Keys, ex: Exchange, stream: UserStream
) -> AsyncIterator[PushedSnapshots]:
    """The poller (a full poll only at the start and when asked: interval an hour) and the
    pushed updates, in this loop."""
    poller = SnapshotPoller(r, keys, ex, SystemClock(), allow_list=[SYM], poll_interval_s=3600)
    pushed = PushedSnapshots(poller, stream, SystemClock(), touch_s=0.05)
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(poller.run(stop)), asyncio.ensure_future(pushed.run(stop))]
    try:
        yield pushed
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


async def snapshot(r: Any, keys: Keys) -> dict[str, str]:
    h: dict[str, str] = await r.hgetall(keys.snapshot(SYM))
    return h


async def ticks(pushed: PushedSnapshots, n: int) -> None:
    for _ in range(n):
        pushed.ticked.clear()
        await asyncio.wait_for(pushed.ticked.wait(), WAIT_S)


async def pushed_amount(r: Any, keys: Keys, pushed: PushedSnapshots, amt: str) -> None:
    async def loop() -> None:
        while (await snapshot(r, keys)).get("position_amt") != amt:
            pushed.written.clear()
            await pushed.written.wait()

    await asyncio.wait_for(loop(), WAIT_S)


async def lifecycle(
    r: Any, keys: Keys, pushed: PushedSnapshots, move: Any, down: Any, up: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    await asyncio.wait_for(pushed.up.wait(), WAIT_S)
    polled_at = pushed.poller.full_poll_started_at
    first = float((await snapshot(r, keys))["ts_epoch"])
    await ticks(pushed, 3)
    out["touched"] = float((await snapshot(r, keys))["ts_epoch"]) > first
    await move()
    await pushed_amount(r, keys, pushed, "0.5")
    out["pushed"] = (await snapshot(r, keys))["source"]
    out["no_poll_needed"] = pushed.poller.full_poll_started_at == polled_at
    await down()
    await asyncio.wait_for(pushed.down.wait(), WAIT_S)
    await ticks(pushed, 1)
    frozen = float((await snapshot(r, keys))["ts_epoch"])
    await ticks(pushed, 3)
    out["aged"] = float((await snapshot(r, keys))["ts_epoch"]) == frozen
    await up()
    await asyncio.wait_for(pushed.up.wait(), WAIT_S)
    assert pushed.connected_at is not None
    out["resynced_by_poll"] = pushed.poller.full_poll_started_at >= pushed.connected_at
    return out


EXPECTED = {"touched": True, "no_poll_needed": True, "aged": True, "resynced_by_poll": True}


def test_pushed_snapshots_on_binance(arun: Any, keys: Keys, fake: FakeBinance) -> None:
    fake.set_position(SYM, "1")

    async def body(r: Any) -> dict[str, Any]:
        ex = adapter(fake)
        stream = BinanceUserStream(API_KEY, API_SECRET, demo=True, base_url=fake.url)
        try:
            async with running(r, keys, ex, stream) as pushed:

                async def move() -> None:
                    fake.set_position(SYM, "0.5")

                async def down() -> None:
                    fake.set_stream_refused(True)

                async def up() -> None:
                    fake.set_stream_refused(False)

                return await lifecycle(r, keys, pushed, move, down, up)
        finally:
            await ex.close()

    out = arun(body)
    assert out.pop("pushed") == "binance-stream"
    assert out == EXPECTED


class BreakableSimStream(SimUserStream):
    """The sim's stream, made to fail on demand (its Redis is shared with the test)."""

    broken = False

    async def _read(self, who: str) -> list[dict[str, str]]:
        if self.broken:
            self._alive = False
            raise ExchangeUnavailable("sim stream: broken (test)")
        return await super()._read(who)


def test_pushed_snapshots_on_the_sim(arun: Any, keys: Keys) -> None:
    async def body(r: Any) -> dict[str, Any]:
        sim = SimExchange(r, keys)
        await sim.set_position(SYM, D(1), D(100))
        stream = BreakableSimStream(r, keys)
        async with running(r, keys, sim, stream) as pushed:

            async def move() -> None:
                await sim.place_reduce_only_market(SYM, "SELL", D("0.5"), "pc-p1")

            async def down() -> None:
                stream.broken = True

            async def up() -> None:
                stream.broken = False

            return await lifecycle(r, keys, pushed, move, down, up)

    out = arun(body)
    assert out.pop("pushed") == "sim-stream"
    assert out == EXPECTED


def test_a_poll_read_before_a_push_does_not_overwrite_it(arun: Any, keys: Keys) -> None:
    """A poll that read the exchange before a pushed update was written leaves that
    symbol's snapshot to the push (its answer is older)."""

    class SlowSim(SimExchange):
        async def fetch_positions(self, symbols: Any = None) -> Any:
            got = await super().fetch_positions(symbols)
            await pushed_now()  # a push lands between this read and the poll's write
            return got

    async def body(r: Any) -> tuple[str, str]:
        nonlocal pushed_now
        sim = SlowSim(r, keys)
        await sim.set_position(SYM, D(1), D(100))
        poller = SnapshotPoller(r, keys, sim, SystemClock(), allow_list=[SYM], poll_interval_s=5)
        await poller.poll_once()
        pushed = PushedSnapshots(poller, SimUserStream(r, keys), SystemClock())

        async def push() -> None:
            await SimExchange.set_position(sim, SYM, D("0.4"))
            got = await SimExchange.fetch_positions(sim, [SYM])
            await pushed.write(got)

        pushed_now = push
        await SimExchange.set_position(sim, SYM, D("0.7"))
        await poller.poll_once()  # reads 0.7, then the push (0.4) lands, then the write
        after_race = (await snapshot(r, keys))["position_amt"]

        async def nothing() -> None:
            return None

        pushed_now = nothing
        await poller.poll_once()  # a later poll writes what it reads
        return after_race, (await snapshot(r, keys))["position_amt"]

    async def pushed_now() -> None:
        return None

    assert arun(body) == ("0.4", "0.4")
