"""The snapshot poller: every ``POLL_INTERVAL_S``, every watched symbol's position in one
exchange call, every snapshot written in one pipeline with the same ``ts_epoch``.

Watched: the allowlist, every symbol with a ledger (a key scan every ``LEDGER_SCAN_S``) and
every symbol the exchange reports a position for. A symbol the exchange knows (it has
filters) but reports no position for gets a snapshot of amount 0: the exchange answered.
A failed read writes nothing, never zeros: the old snapshots go stale and P3.3 denies
``stale_exchange_state`` until the exchange answers again.

An exchange whose reduce-only orders rest against the position (Binance: a close beyond
what they leave is refused, -4118) has ``resting_reduce_only``: read with each poll while a
watched position is open, it goes into each snapshot as ``resting_reduce_qty``, which P3.3's
safe close quantity leaves room for. When that read fails, the poll writes the snapshots
without it (0): the exchange still refuses an order that does not fit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from permitchain.contract.errors import ExchangeError, StoreError
from permitchain.contract.keys import Keys
from permitchain.contract.models import decimal_or_none
from permitchain.contract.reasons import WRONG_KEY_TYPE
from permitchain.exchange.base import Exchange, PositionInfo, SymbolFilters
from permitchain.position_brain.metrics import (
    LEDGER_AMT,
    POLL_SECONDS,
    POSITION_AMT,
    SNAPSHOT_AGE,
    SNAPSHOTS,
)
from permitchain.position_brain.state import LAYER, SNAPSHOT_TTL_S, init_ledgers, snapshot_fields
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.clock import Clock
from permitchain.runtime.service import WRONG_TYPES
from permitchain.store import REDIS_FAULTS, AsyncRedis, is_wrong_type, wrong_type
from permitchain.store.steps import steps_for

log = logging.getLogger("permitchain.p33.poller")

FILTER_REFRESH_S = 300.0
LEDGER_SCAN_S = 30.0
STORE_FAULTS: tuple[type[BaseException], ...] = (StoreError, *REDIS_FAULTS)


@dataclass(frozen=True, slots=True)
class PollOutcome:
    ok: bool  # the exchange answered
    ts: float | None = None  # the ts_epoch of every snapshot written
    written: tuple[str, ...] = ()
    initialised: tuple[str, ...] = ()  # ledgers initialised at first sight
    duration_s: float = 0.0
    unknown: tuple[str, ...] = field(default=())  # watched, but the exchange has no such symbol


#: Symbols per pipeline when writing snapshots (one event-loop slice each: ~2 ms of work).
POLL_CHUNK = 100
#: A snapshot whose position and filters did not change gets only its new time written; it
#: is written whole (fields, TTL, the ledger check) at least this often (each symbol after
#: between half of it and all of it, so that not all are due in the same poll), and on any
#: change.
FULL_WRITE_EVERY_S = 60.0
#: Least time between two targeted polls (after fills), so a busy chain batches them.
TARGETED_MIN_GAP_S = 0.02


class SnapshotPoller:
    def __init__(
        self,
        r: AsyncRedis,
        keys: Keys,
        exchange: Exchange,
        clock: Clock,
        *,
        allow_list: Iterable[str],
        poll_interval_s: float,
    ) -> None:
        self.redis, self.keys, self.exchange, self.clock = r, keys, exchange, clock
        self.allow_list = frozenset(allow_list)
        self.poll_interval_s = poll_interval_s
        self.filters: dict[str, SymbolFilters] = {}
        self._filters_at = -FILTER_REFRESH_S
        self._ledger_symbols: set[str] = set()
        self._ledger_scan_at = -LEDGER_SCAN_S
        self.poll_now = asyncio.Event()  # set by request(): poll the dirty symbols at once
        self.dirty: set[str] = set()
        self._seen: set[str] = set()  # symbols whose metric series exist
        #: per symbol: what its last whole snapshot was written from, and when (monotonic)
        #: the next whole write is due
        self._whole: dict[str, tuple[Any, float]] = {}
        self.steps = steps_for(r)
        #: per symbol: reduce-only quantity resting on its closing side (last poll)
        self.resting: dict[str, Decimal] = {}
        #: monotonic start of the last full poll the exchange answered (pushed.py: synced)
        self.full_poll_started_at = float("-inf")
        self.full_due = False  # request_full(): the next poll is a full one, at once
        #: per symbol: when (monotonic) a pushed update was last written (pushed.py); a poll
        #: whose read began before it leaves the symbol alone: its answer is older
        self.pushed_at: dict[str, float] = {}

    async def watched(self) -> set[str]:
        if time.monotonic() - self._ledger_scan_at > LEDGER_SCAN_S:
            prefix = self.keys.ledger("")
            self._ledger_symbols = {
                key[len(prefix) :]
                async for key in self.redis.scan_iter(match=self.keys.ledger_pattern, count=1000)
            }
            self._ledger_scan_at = time.monotonic()
        return set(self.allow_list) | self._ledger_symbols

    def _first_sight(self, sym: str) -> None:
        """A symbol's first snapshot: its four series appear at 0, as they always have."""
        self._seen.add(sym)
        SNAPSHOTS.ensure(sym, "ok")
        SNAPSHOTS.ensure(sym, "flat")
        POSITION_AMT.ensure(sym)
        LEDGER_AMT.ensure(sym)

    def request_full(self) -> None:
        """Poll every symbol now (the user stream came back: what did it miss?)."""
        self.full_due = True
        self.poll_now.set()

    def known(self) -> set[str]:
        """Symbols whose snapshot this poller has written."""
        return set(self._whole)

    async def touch_known(self, now: float) -> None:
        """The current time on every snapshot this poller wrote (pushed.py, while the user
        stream is alive and synced); a hash that is gone is left to the next poll."""
        syms = sorted(self._whole)
        now_iso = datetime.fromtimestamp(now, UTC).isoformat()
        for i in range(0, len(syms), POLL_CHUNK):
            await self._touch(syms[i : i + POLL_CHUNK], now, now_iso)
            await asyncio.sleep(0)
        SNAPSHOT_AGE.written_at.update(dict.fromkeys(syms, now))

    def request(self, symbol: str) -> None:
        """Refresh this symbol's snapshot now (after a fill), not at the next full poll."""
        self.dirty.add(symbol)
        self.poll_now.set()

    async def _read_exchange(self, only: Collection[str] | None) -> dict[str, PositionInfo]:
        """One positions call (and the filters, when due or when a symbol is new)."""
        refreshed = False
        if time.monotonic() - self._filters_at > FILTER_REFRESH_S:
            self.filters = await self.exchange.filters(None)
            self._filters_at, refreshed = time.monotonic(), True
        positions = await self.exchange.fetch_positions(list(only) if only is not None else None)
        new = [s for s in positions if s not in self.filters]
        if new and not refreshed:  # listed since the last refresh
            self.filters.update(await self.exchange.filters(new))
        resting = getattr(self.exchange, "resting_reduce_only", None)
        if resting is not None and only is None:
            try:
                self.resting = await resting(positions)
            except ExchangeError as e:
                self.resting = {}
                log.warning("resting reduce-only orders not read: %s", e)
        return positions

    async def poll_once(self, only: Collection[str] | None = None) -> PollOutcome:
        """One poll: one exchange read, one pipeline of writes, one more for new ledgers.
        ``only``: refresh just these symbols (a targeted poll after fills)."""
        started = time.monotonic()
        watched = set(only) if only is not None else await self.watched()
        try:
            positions = await self._read_exchange(only)
        except ExchangeError as e:
            for sym in watched:
                SNAPSHOTS.inc(sym, "error")
            log.warning("exchange read failed; snapshots left to go stale: %s", e)
            return PollOutcome(ok=False, duration_s=time.monotonic() - started)
        now = self.clock.now()
        written: list[str] = []
        unknown: list[str] = []
        missing: dict[str, Decimal] = {}
        syms = sorted(
            s for s in watched | positions.keys() if self.pushed_at.get(s, float("-inf")) < started
        )
        now_iso = datetime.fromtimestamp(now, UTC).isoformat()
        # In chunks, each one event-loop slice (build, write, record), so the plans this
        # process judges interleave with a big poll instead of waiting for all of it.
        for i in range(0, len(syms), POLL_CHUNK):
            written += await self._write_chunk(
                syms[i : i + POLL_CHUNK], positions, now, now_iso, unknown, missing
            )
            await asyncio.sleep(0)
        initialised = await init_ledgers(self.redis, self.keys, missing)
        for sym in initialised:
            LEDGER_AMT.set(sym, float(missing[sym]))
            self._ledger_symbols.add(sym)
            log.info("[LEDGER] symbol=%s initialised from the exchange: %s", sym, missing[sym])
        if only is None:  # a full poll whose read began after `started` is written
            self.full_poll_started_at = started
        duration = time.monotonic() - started
        POLL_SECONDS.set(duration)
        return PollOutcome(True, now, tuple(written), tuple(initialised), duration, tuple(unknown))

    async def _write_chunk(
        self,
        syms: list[str],
        positions: dict[str, PositionInfo],
        now: float,
        now_iso: str,
        unknown: list[str],
        missing: dict[str, Decimal],
    ) -> list[str]:
        """Write one chunk's snapshots and record them; returns the symbols written. Adds to
        ``unknown`` (no filters) and ``missing`` (a position, no ledger).

        A snapshot whose position and filters changed, or that is due its periodic whole
        write, is written whole (fields, TTL, with its ledger's amount read back). The others
        get only the poll's time (:meth:`AtomicSteps.snapshot_touch`: on a plain or Sentinel
        server all of them in one script call, ``snapshot_touch.lua``; on a Redis Cluster one
        HSET each); any hash that was gone is named by it and written whole at once."""
        mono = time.monotonic()
        whole: list[str] = []
        touch: list[str] = []
        done: list[str] = []  # both, in the chunk's order
        for sym in syms:
            f = self.filters.get(sym)
            if f is None:
                unknown.append(sym)
                SNAPSHOTS.inc(sym, "unknown_symbol")
                continue
            done.append(sym)
            last = self._whole.get(sym)
            seen = (positions.get(sym), f, self.resting.get(sym, Decimal(0)))
            if last is None or last[0] != seen or mono >= last[1]:
                whole.append(sym)
            else:  # the exchange says what it said: only the time moves
                touch.append(sym)
        if touch:
            whole += await self._touch(touch, now, now_iso)
        if whole:
            await self._write_whole(whole, positions, now, now_iso, mono, missing)
        for sym in done:
            if sym not in self._seen:
                self._first_sight(sym)
        SNAPSHOTS.inc_each((s, "ok" if s in positions else "flat") for s in done)
        SNAPSHOT_AGE.written_at.update(dict.fromkeys(done, now))
        return done

    async def _touch(self, syms: list[str], now: float, now_iso: str) -> list[str]:
        """The new time on each snapshot of ``syms``; returns those whose hash was gone
        (nothing written for them)."""
        keys = [self.keys.snapshot(s) for s in syms]
        gone = await self.steps.snapshot_touch(keys, f"{now:.6f}", now_iso)
        return [syms[i] for i in gone]

    async def _write_whole(
        self,
        syms: list[str],
        positions: dict[str, PositionInfo],
        now: float,
        now_iso: str,
        mono: float,
        missing: dict[str, Decimal],
    ) -> None:
        """Each snapshot of ``syms`` whole, in one pipeline, with its ledger's amount."""
        pipe = self.redis.pipeline(transaction=False)
        for sym in syms:
            key = self.keys.snapshot(sym)
            pipe.hset(
                key,
                mapping=snapshot_fields(
                    sym,
                    positions.get(sym),
                    self.filters[sym],
                    now,
                    self.exchange.name,
                    now_iso,
                    self.resting.get(sym, Decimal(0)),
                ),
            )
            pipe.expire(key, SNAPSHOT_TTL_S)
            pipe.hget(self.keys.ledger(sym), "last_known_amt")
        replies = await pipe.execute(raise_on_error=False)
        await self._replace_wrong_types(syms, replies, positions, now, now_iso)
        for i, sym in enumerate(syms):
            pos = positions.get(sym)
            seen = (pos, self.filters[sym], self.resting.get(sym, Decimal(0)))
            self._whole[sym] = (seen, mono + self._whole_every(sym))
            amt = pos.amt if pos is not None else Decimal(0)
            POSITION_AMT.set(sym, float(amt))
            raw = replies[3 * i + 2]
            if isinstance(raw, BaseException):  # a ledger of the wrong type: P3.3 denies on it
                continue
            ledger_amt = decimal_or_none(raw)
            if ledger_amt is not None:
                LEDGER_AMT.set(sym, float(ledger_amt))
            elif raw is None and amt != 0:
                missing[sym] = amt

    async def _replace_wrong_types(
        self,
        syms: list[str],
        replies: list[Any],
        positions: dict[str, PositionInfo],
        now: float,
        now_iso: str,
    ) -> None:
        """A snapshot key holding another Redis type (P3.3 alone writes snapshots): replaced
        by the snapshot, with a line naming it; P3.3 denied on it (``wrong_key_type``) until
        then. Any other fault of the write is raised (the poll fails, snapshots go stale)."""
        for i, sym in enumerate(syms):
            key, reply = self.keys.snapshot(sym), replies[3 * i]
            if not isinstance(reply, BaseException):
                continue
            if not is_wrong_type(reply):
                raise reply
            WRONG_TYPES.labels(LAYER, "snapshot").inc()
            log.error(
                "[SNAPSHOT] %s: %s; replaced by the snapshot",
                WRONG_KEY_TYPE,
                await wrong_type(self.redis, key, "hash"),
            )
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(
                key,
                mapping=snapshot_fields(
                    sym, positions.get(sym), self.filters[sym], now, self.exchange.name, now_iso
                ),
            )
            pipe.expire(key, SNAPSHOT_TTL_S)
            await pipe.execute()
        for i in range(len(syms)):  # the ledger reads: a wrong type is P3.3's deny, not here
            if isinstance(replies[3 * i + 1], BaseException):
                raise replies[3 * i + 1]

    def _whole_every(self, sym: str) -> float:
        """Seconds until ``sym``'s next whole write: between half of ``FULL_WRITE_EVERY_S``
        and all of it, fixed per symbol, so the symbols first seen in the same poll are not
        all written whole again in the same later poll."""
        spread = zlib.crc32(sym.encode()) % 1000 / 1000
        return FULL_WRITE_EVERY_S * (1 - spread / 2)

    async def run(
        self, stop: asyncio.Event, after_full_poll: Callable[[], None] | None = None
    ) -> None:
        """Poll until ``stop``: every symbol each ``poll_interval_s``; in between, at once,
        only the symbols ``request()`` marked dirty (a fill costs one symbol's read, not a
        full poll, however busy the chain is). ``after_full_poll`` is called after each full
        poll, whether it succeeded or not. A store fault is retried after a backoff."""
        last_full = -self.poll_interval_s
        backoff = Backoff(base_s=0.1, cap_s=2.0)
        while not stop.is_set():
            failed = False
            started = time.monotonic()
            full = started - last_full >= self.poll_interval_s or self.full_due
            self.full_due = self.full_due and not full
            only = None if full else set(self.dirty)
            self.dirty.clear()
            self.poll_now.clear()  # a request made during this poll triggers the next one
            try:
                if full or only:
                    await self.poll_once(only)
                if full:
                    last_full = started
            except STORE_FAULTS as e:
                failed = True
                log.warning("poll failed (store): %s", e)
            except Exception:
                failed = True
                log.exception("poll failed")
            if full and after_full_poll is not None:
                after_full_poll()
            delay = max(0.0, last_full + self.poll_interval_s - time.monotonic())
            if failed:  # not in a tight loop while Redis is away
                delay = backoff.next_delay()
            else:
                backoff.reset()
            if not full:
                # coalesce: fills arriving together cost one targeted read, not one each
                await asyncio.sleep(min(delay, TARGETED_MIN_GAP_S))
                delay = max(0.0, delay - TARGETED_MIN_GAP_S)
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.poll_now.wait()),
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
