"""Live events: one blocking XREAD over the audit and dead-letter streams, fanned out.

:class:`Broadcaster` is the console's only reader of the streams as they grow: one
``XREAD BLOCK`` loop (no polling) hands each new entry to every subscriber (SSE clients) and
to the listeners (the notifier). An SSE client that falls behind by more than its queue is
dropped; it reconnects with ``Last-Event-ID`` and catches up from the stream itself.

SSE events are audit entries, their ``id`` the audit stream's entry id, so ``Last-Event-ID``
resumes exactly after the last one seen. Event types: ``trading_state`` (an operator's
halt/reduce/resume), ``result`` (the executor's result of a plan), ``decision`` (any other
decision of any layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.ops import reads as rd
from permitchain.ops.history import audit_entry
from permitchain.runtime.backoff import Backoff
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.console")

EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
READ_COUNT = 1000
BLOCK_MS = 1000
QUEUE_SIZE = 20_000
KEEPALIVE_S = 15.0
BACKLOG_PAGE = 500
#: Result fields kept in a compact event (the page's pipeline needs no more).
COMPACT_RESULT = ("status", "filled_qty", "chain_latency_ms", "permit_wait_ms", "error")

Listener = Callable[[str, str, dict[str, str]], None]


def event_type(fields: dict[str, str]) -> str:
    layer, decision = fields.get("layer", ""), fields.get("decision", "")
    if layer == "operator" and decision.startswith("TRADING_"):
        return "trading_state"
    if layer == "executor":
        return "result"
    return "decision"


def compact(entry: dict[str, Any]) -> dict[str, Any]:
    """An audit entry without its context, but for what the live view draws."""
    ctx = entry.pop("context")
    if isinstance(ctx, dict):
        result = ctx.get("result")
        if isinstance(result, dict):
            entry["result"] = {k: result[k] for k in COMPACT_RESULT if result.get(k)}
        for k in ("before", "after", "operator", "action"):
            if k in ctx:
                entry[k] = ctx[k]
    return entry


def sse(entry_id: str, fields: dict[str, str], *, compact_form: bool) -> str:
    e = audit_entry(entry_id, fields)
    data = json.dumps(compact(e) if compact_form else e, separators=(",", ":"), default=str)
    return f"id: {entry_id}\nevent: {event_type(fields)}\ndata: {data}\n\n"


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscriber:
    compact: bool
    queue: asyncio.Queue[tuple[str, str]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False


class Broadcaster:
    def __init__(self, redis: AsyncRedis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.subscribers: set[Subscriber] = set()
        self.listeners: list[Listener] = []
        self.ready = asyncio.Event()

    async def _tail_ids(self) -> dict[str, str]:
        out = {}
        for stream in (self.keys.decisions, self.keys.deadletter):
            last = await rd.xrevrange(self.redis, stream, count=1)
            out[stream] = last[0][0] if last else "0-0"
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``: every new entry to the subscribers and listeners."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        positions: dict[str, str] | None = None
        while not stop.is_set():
            try:
                if positions is None:
                    positions = await self._tail_ids()
                    self.ready.set()
                resp = await rd.xread(self.redis, positions, count=READ_COUNT, block_ms=BLOCK_MS)
            except REDIS_FAULTS as e:
                log.warning("console: events: redis: %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next_delay())
                continue
            backoff.reset()
            for stream, entries in resp:
                if entries:
                    positions[stream] = entries[-1][0]
                for entry_id, fields in entries:
                    self.dispatch(stream, entry_id, fields)

    def dispatch(self, stream: str, entry_id: str, fields: dict[str, str]) -> None:
        for listener in self.listeners:
            try:
                listener(stream, entry_id, fields)
            except Exception:  # a listener's fault never stops the events
                log.exception("console: listener failed on %s %s", stream, entry_id)
        if stream != self.keys.decisions or not self.subscribers:
            return
        forms: dict[bool, str] = {}
        for sub in list(self.subscribers):
            if sub.dropped:
                continue
            text = forms.get(sub.compact)
            if text is None:
                text = forms[sub.compact] = sse(entry_id, fields, compact_form=sub.compact)
            try:
                sub.queue.put_nowait((entry_id, text))
            except asyncio.QueueFull:
                sub.dropped = True  # it resumes with Last-Event-ID from the stream
                log.warning("console: an event client fell %d events behind; dropped", QUEUE_SIZE)
                self.subscribers.discard(sub)

    async def stream(self, last_event_id: str | None, *, compact_form: bool) -> AsyncIterator[str]:
        """One SSE client: the entries after ``last_event_id`` (from the stream), then live."""
        sub = Subscriber(compact_form)
        self.subscribers.add(sub)
        try:
            cursor = last_event_id
            yield "retry: 1000\n: connected\n\n"
            if cursor is not None:
                while True:
                    try:
                        page = await rd.xrange(
                            self.redis, self.keys.decisions, f"({cursor}", "+", count=BACKLOG_PAGE
                        )
                    except REDIS_FAULTS as e:  # the client resumes from ``cursor`` later
                        yield f": redis unreachable ({type(e).__name__}); reconnect\n\n"
                        return
                    if page:
                        cursor = page[-1][0]
                        yield "".join(sse(i, f, compact_form=compact_form) for i, f in page)
                    if len(page) < BACKLOG_PAGE:
                        break
            floor = id_key(cursor) if cursor else (0, 0)
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if sub.dropped:
                        return
                    yield ": keepalive\n\n"
                    continue
                batch = [item]
                while not sub.queue.empty() and len(batch) < READ_COUNT:
                    batch.append(sub.queue.get_nowait())
                text = "".join(t for i, t in batch if id_key(i) > floor)
                if text:
                    yield text
                if sub.dropped and sub.queue.empty():
                    return
        finally:
            self.subscribers.discard(sub)
