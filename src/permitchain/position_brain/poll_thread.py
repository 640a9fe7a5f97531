"""The snapshot poller on a thread of its own, with its own event loop, Redis client and
exchange client.

Why: a full poll builds, writes and records a snapshot for every watched symbol. With
thousands of symbols that is tens of milliseconds of Python every ``POLL_INTERVAL_S``; in
the event loop that judges plans it showed as the P3.3 hop's tail (docs/performance.md).
On its own thread the poll still costs CPU, but the interpreter hands the GIL back to the
plan-judging thread every :data:`SWITCH_INTERVAL_S` instead of at the end of a chunk.

The thread's poller is a plain :class:`~permitchain.position_brain.poller.SnapshotPoller`;
``request(symbol)`` (a fill seen in the ledger) crosses over with ``call_soon_threadsafe``.
A poller that fails raises in the thread, ends :meth:`PollThread.run` with the error, and the
service's supervisor starts it again, as for any loop of the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.exchange.base import Exchange
from permitchain.exchange.stream import UserStream
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.position_brain.pushed import PushedSnapshots
from permitchain.runtime.clock import Clock
from permitchain.store import AsyncRedis, async_client

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - a declared dependency on Linux
    uvloop = None

#: How long a thread may hold the GIL while another wants it (CPython's default is 5 ms).
#: A plan read during a full poll waits for the GIL at each of its wake-ups: 0.2 ms instead of
#: 1 ms took the P3.3 hop's p99 at 100 plans/s from 2.9-3.0 to 2.4 ms (docs/performance.md).
SWITCH_INTERVAL_S = 0.0002


class PollThread:
    def __init__(
        self,
        redis_url: str | None,
        keys: Keys,
        clock: Clock,
        make_exchange: Callable[[AsyncRedis], Exchange],
        *,
        allow_list: Iterable[str],
        poll_interval_s: float,
        make_stream: Callable[[AsyncRedis], UserStream | None] | None = None,
        push_touch_s: float = 0.5,
        transport: str = "lean",
    ) -> None:
        """``make_stream``: the exchange's pushed updates (``PushedSnapshots`` runs beside
        the poller on this thread); None: polling only."""
        self.url, self.keys, self.clock = redis_url, keys, clock
        self.transport = transport  # REDIS_TRANSPORT
        self.make_exchange = make_exchange
        self.make_stream, self.push_touch_s = make_stream, push_touch_s
        self.allow_list, self.poll_interval_s = frozenset(allow_list), poll_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: SnapshotPoller | None = None
        self._stop: asyncio.Event | None = None
        self._first_poll: asyncio.Event | None = None  # in the service's loop

    async def first_poll(self, timeout_s: float) -> None:
        """Until the first full poll since the start was attempted (at most ``timeout_s``):
        a plan is not judged before P3.3 has asked the exchange once."""
        ev = self._first_poll
        if ev is None or ev.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout_s)

    def request(self, symbol: str) -> None:
        """Refresh ``symbol`` now (from the service's thread); dropped when not running."""
        loop, poller = self._loop, self._poller
        if loop is not None and poller is not None:
            with contextlib.suppress(RuntimeError):  # the thread's loop just closed
                loop.call_soon_threadsafe(poller.request, symbol)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the poller on its thread until ``stop`` (or until it fails: raises)."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        started = threading.Event()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        here = asyncio.get_running_loop()
        first = self._first_poll = asyncio.Event()

        def polled() -> None:  # on the poller's thread
            if not first.is_set():
                with contextlib.suppress(RuntimeError):  # the service's loop closed
                    here.call_soon_threadsafe(first.set)

        def finished(exc: BaseException | None) -> None:
            if not done.done():
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)

        def main() -> None:
            try:
                (uvloop.run if uvloop is not None else asyncio.run)(self._main(started, polled))
            except BaseException as e:  # handed to the service's loop, which raises it
                here.call_soon_threadsafe(finished, e)
            else:
                here.call_soon_threadsafe(finished, None)
            finally:
                started.set()  # also when it failed before it started

        thread = threading.Thread(target=main, name="p33-poller", daemon=True)
        thread.start()
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiting: list[asyncio.Future[Any]] = [done, stopper]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await asyncio.to_thread(started.wait, 10)
            loop, ev = self._loop, self._stop
            if loop is not None and ev is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(ev.set)
        await done  # the thread ended: its error, if any, is raised here

    async def _main(self, started: threading.Event, polled: Callable[[], None]) -> None:
        r = async_client(self.url, transport=self.transport)
        ex = self.make_exchange(r)
        self._poller = SnapshotPoller(
            r,
            self.keys,
            ex,
            self.clock,
            allow_list=self.allow_list,
            poll_interval_s=self.poll_interval_s,
        )
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        started.set()
        stream = self.make_stream(r) if self.make_stream is not None else None
        try:
            if stream is None:
                await self._poller.run(self._stop, after_full_poll=polled)
            else:
                pushed = PushedSnapshots(
                    self._poller, stream, self.clock, touch_s=self.push_touch_s
                )
                await asyncio.gather(
                    self._poller.run(self._stop, after_full_poll=polled), pushed.run(self._stop)
                )
        finally:
            self._loop = self._poller = None
            await ex.close()
            await r.aclose()
