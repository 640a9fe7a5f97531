"""Pushed position updates keep the snapshots fresh between polls.

Beside the poller (same thread, same event loop), two loops:

* **watch**: every position the exchange's user stream pushes is written into its snapshot at
  once (amount, side, entry price, unrealized PnL, time); a symbol without a snapshot yet gets
  a targeted poll. A poll whose exchange read began before that write leaves the symbol
  alone (``SnapshotPoller.pushed_at``): its answer is older than the push.
* **touch**: every ``PUSH_TOUCH_S`` while the stream is *alive and synced*, every snapshot the
  poller wrote gets the current time: nothing pushed means nothing changed, so the snapshot
  is still the exchange's state. Synced: a full poll has completed since the stream last
  (re)connected (events missed while it was down are covered by that poll; the poller is
  asked for one at once on each reconnection).

When the stream is down nothing is touched: the snapshots age from their last poll, and
P3.3 denies ``stale_exchange_state`` after ``STALE_THRESHOLD_S`` unless the poller (every
``POLL_INTERVAL_S``, the fallback) refreshes them, as without pushed updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

from permitchain.contract.errors import ExchangeError
from permitchain.contract.models import fmt_decimal
from permitchain.exchange.base import PositionInfo
from permitchain.exchange.stream import UserStream
from permitchain.position_brain.checks import side_of
from permitchain.position_brain.metrics import POSITION_AMT
from permitchain.position_brain.poller import STORE_FAULTS, SnapshotPoller
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.clock import Clock

log = logging.getLogger("permitchain.p33.pushed")

PUSHED = Counter("p33_pushed_positions_total", "Position updates pushed by the exchange")
STREAM_UP = Gauge("p33_user_stream_up", "1 while the exchange's user stream is alive and synced")


class PushedSnapshots:
    def __init__(
        self, poller: SnapshotPoller, stream: UserStream, clock: Clock, *, touch_s: float = 0.5
    ) -> None:
        self.poller, self.stream, self.clock, self.touch_s = poller, stream, clock, touch_s
        self.connected_at: float | None = None  # monotonic: when the stream came (back) up
        #: set while synced / while down; ``ticked`` after each touch-loop round,
        #: ``written`` after each pushed write (what tests and the bench wait on)
        self.up, self.down = asyncio.Event(), asyncio.Event()
        self.ticked, self.written = asyncio.Event(), asyncio.Event()

    def synced(self) -> bool:
        """Alive, and a full poll completed since it (re)connected."""
        return (
            self.connected_at is not None
            and self.stream.alive()
            and self.poller.full_poll_started_at >= self.connected_at
        )

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.ensure_future(self.watch(stop)), asyncio.ensure_future(self.touch(stop))]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self.stream.close()

    async def watch(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base_s=0.2, cap_s=5.0)
        while not stop.is_set():
            try:
                changed = await self.stream.positions()
                backoff.reset()
                if changed:
                    await self.write(changed)
            except ExchangeError as e:
                delay = backoff.next_delay()
                log.warning(
                    "[STREAM] user stream down (%s); polling only; retrying in %.1fs", e, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            except STORE_FAULTS as e:
                log.warning("[STREAM] pushed position not written (store): %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next_delay())

    async def write(self, changed: dict[str, PositionInfo]) -> None:
        """Each pushed position into its snapshot, now."""
        now = self.clock.now()
        ts, iso = f"{now:.6f}", datetime.fromtimestamp(now, UTC).isoformat()
        pipe = self.poller.redis.pipeline(transaction=False)
        written = []
        for sym, pos in sorted(changed.items()):
            if sym not in self.poller.known():
                self.poller.request(sym)  # no snapshot yet: the poller writes it whole
                continue
            fields = {
                "position_amt": fmt_decimal(pos.amt),
                "side": side_of(pos.amt),
                "entry_price": fmt_decimal(pos.entry_price),
                "unrealized_pnl": fmt_decimal(pos.unrealized_pnl),
                "ts_epoch": ts,
                "ts_iso": iso,
                "source": f"{self.stream.name}-stream",
            }
            if pos.mark_price > 0:
                fields["mark_price"] = fmt_decimal(pos.mark_price)
            pipe.hset(self.poller.keys.snapshot(sym), mapping=fields)
            written.append(sym)
        if written:
            stamp = time.monotonic()
            self.poller.pushed_at.update(dict.fromkeys(written, stamp))
            await pipe.execute()
            self.written.set()
        for sym in written:
            PUSHED.inc()
            POSITION_AMT.set(sym, float(changed[sym].amt))
            log.info("[STREAM] symbol=%s pushed position %s", sym, fmt_decimal(changed[sym].amt))

    async def touch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.touch_s)
            alive = self.stream.alive()
            if alive and self.connected_at is None:
                self.connected_at = time.monotonic()
                self.poller.request_full()  # what was missed while down: one full poll
                log.info("[STREAM] user stream up; a full poll syncs it")
            elif not alive and self.connected_at is not None:
                self.connected_at = None
                log.warning("[STREAM] user stream lost; snapshots age from their last poll")
            synced = self.synced()
            STREAM_UP.set(1 if synced else 0)
            (self.up.set if synced else self.up.clear)()
            (self.down.clear if synced else self.down.set)()
            if synced:
                try:
                    await self.poller.touch_known(self.clock.now())
                except STORE_FAULTS as e:
                    log.warning("[STREAM] snapshots not touched (store): %s", e)
            self.ticked.set()
