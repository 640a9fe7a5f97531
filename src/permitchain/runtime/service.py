"""The service runner: consumer groups, dead letters, reclaim, heartbeat, metrics, signals.

A service is a set of :class:`Consumer` loops (one consumer group on one stream each) and
background tasks, run by :class:`ServiceRunner` until SIGTERM/SIGINT. On the first signal the
loops stop reading, in-flight entries finish (or stay pending, to be reclaimed: nothing is
lost), the heartbeat is removed and Redis closed; a second signal exits at once.

Entry handling: entries are read as raw bytes and decoded one at a time (``entries.py``): an
entry whose bytes are not UTF-8 is dead-lettered (``not_utf8``, its fields escaped) and
acked, and the others are handled. The handler returns → XACK. It raises ``ContractError`` →
the entry goes to the dead-letter stream and is acked (never a crash loop); a key of the wrong
Redis type (``WrongTypeError``, or the server's ``WRONGTYPE``) is one of those, reason
``wrong_key_type``. It raises ``StoreError`` or a Redis fault → not acked, retried after a
backoff. Any other exception → retried up to ``max_failures`` times in this process, then
dead-lettered with the error. A stream key of another type is logged by name and read again
after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis.exceptions
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from permitchain import __version__
from permitchain.contract.errors import ConfigError, ContractError, StoreError, WrongTypeError
from permitchain.contract.keys import Keys
from permitchain.contract.models import SCHEMA
from permitchain.contract.reasons import WRONG_KEY_TYPE
from permitchain.runtime import gc_tuning
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.entries import (
    NotUtf8,
    RawEntry,
    decode_fields,
    escaped,
    text_id,
    xautoclaim_raw,
    xreadgroup_raw,
)
from permitchain.store import REDIS_FAULTS, AsyncRedis, is_wrong_type, wrong_type

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - a declared dependency on Linux
    uvloop = None

log = logging.getLogger("permitchain.runtime")

Handler = Callable[[str, dict[str, str]], Awaitable[None]]
Task = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

ENTRIES = Counter(
    "permitchain_stream_entries_total", "Stream entries handled", ["service", "stream", "outcome"]
)
DEADLETTERS = Counter(
    "permitchain_deadletter_total", "Entries sent to the dead-letter stream", ["service", "stream"]
)
WRONG_TYPES = Counter(
    "permitchain_wrong_key_type_total",
    "Reads that found a key holding another Redis type than the contract's (wrong_key_type)",
    ["service", "key"],
)
STORE_ERRORS = Counter("permitchain_store_errors_total", "Redis faults seen", ["service"])
UP = Gauge("permitchain_service_up", "1 while the service runs", ["service"])
LOOP_LAG = Histogram(
    "permitchain_event_loop_lag_seconds",
    "How late a 50 ms timer fired: time the event loop was busy with other work",
    ["service"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LOOP_LAG_EVERY_S = 0.05
TASK_RESTARTS = Counter(
    "permitchain_task_restarts_total",
    "Service loops restarted after a failure",
    ["service", "task"],
)

DEADLETTER_MAXLEN = 100_000
#: Faults after which an entry stays pending and is retried (never dead-lettered).
RETRYABLE: tuple[type[BaseException], ...] = (StoreError, *REDIS_FAULTS)
#: Errors while a service starts: waited out (Redis down), or fatal (``start_fault``).
START_FAULTS: tuple[type[BaseException], ...] = (*REDIS_FAULTS, redis.exceptions.NoPermissionError)
HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_TTL_S = 15


def by_symbol(fields: dict[str, str]) -> str:
    """Partition key of a stream entry: its symbol (per-symbol order is what matters)."""
    return fields.get("symbol", "")


def consumer_name(service: str) -> str:
    """Stable per host and service (not per pid), so a restart takes back its own pending."""
    return f"{socket.gethostname()}:{service}"


@dataclass
class Consumer:
    """One consumer group on one stream.

    ``concurrent``: run each entry's handler as its own task (up to ``max_in_flight``), for
    handlers that wait (the executor's permit wait). Otherwise a batch read runs in order,
    or, with ``partition`` (e.g. the symbol), in order within a partition and partitions
    concurrently; the batch is acknowledged with one XACK.
    """

    stream: str
    group: str
    handler: Handler
    count: int = 200
    block_ms: int = 1000
    concurrent: bool = False
    max_in_flight: int = 2000
    claim_idle_ms: int = 5000
    claim_every_s: float = 2.0
    max_failures: int = 3
    partition: Callable[[dict[str, str]], str] | None = None
    max_parallel: int = 16
    in_flight: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)
    #: concurrent handlers' settled entries, acknowledged together by one flusher task
    settled_ok: list[str] = field(default_factory=list)
    settled_dead: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


def shard_consumers(
    stream_of: Callable[[int], str],
    shards: Iterable[int],
    group: str,
    handler: Handler,
    **options: Any,
) -> list[Consumer]:
    """One :class:`Consumer` per shard of a sharded stream (``stream_of(shard)`` names it;
    ``shards``: the shards this instance owns, setting ``STREAM_SHARDS_OWNED``). Each is read
    by its own loop and XREADGROUP (a Redis Cluster reads one slot per command); a symbol's
    entries are all in one shard's stream, so they are still handled in stream order."""
    return [Consumer(stream_of(i), group, handler, **options) for i in shards]


async def ensure_group(r: AsyncRedis, stream: str, group: str) -> None:
    """Create the group at ``$`` (new entries only, never history) if it does not exist."""
    try:
        await r.xgroup_create(stream, group, id="$", mkstream=True)
    except redis.exceptions.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


class ServiceRunner:
    def __init__(
        self,
        name: str,
        redis: AsyncRedis,
        keys: Keys,
        *,
        consumers: list[Consumer] | None = None,
        tasks: list[Task] | None = None,
        metrics_port: int | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.redis = redis
        self.keys = keys
        self.consumers = consumers or []
        self.tasks = tasks or []
        self.metrics_port = metrics_port
        self.on_close = on_close
        self.consumer = consumer_name(name)
        self.stop = asyncio.Event()
        self.started_at = time.time()
        self.bound_metrics_port: int | None = None
        self._signals = 0
        self._handler_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once")
            os._exit(130)
        log.info(
            "%s: signal %s, stopping (in-flight entries finish or stay pending)",
            self.name,
            signal.Signals(sig).name,
        )
        self.stop.set()

    def start_metrics(self) -> None:
        """Serve ``/metrics``; a port that cannot be bound is a start-up fault naming it."""
        if self.metrics_port is None:
            return
        try:
            server, _thread = start_http_server(self.metrics_port, addr="127.0.0.1")
        except OSError as e:
            raise ConfigError(
                f"METRICS_PORT: {self.name} cannot listen on 127.0.0.1:{self.metrics_port} "
                f"({e.strerror or e}); free the port or set another"
            ) from None
        self.bound_metrics_port = int(server.server_port)
        log.info("%s: metrics on http://127.0.0.1:%d/metrics", self.name, self.bound_metrics_port)

    async def close(self) -> None:
        """Release what the runner holds (the exchange client, Redis), without running."""
        if self.on_close is not None:
            await self.on_close()
        await self.redis.aclose()

    async def run(self) -> None:
        """Run until ``stop`` is set; then shut down cleanly."""
        try:
            self.start_metrics()
            await self._until_store_ready()
        except ConfigError:
            await self.close()
            raise
        UP.labels(self.name).set(1)
        loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("heartbeat", self._heartbeat_loop),
            ("loop_lag", self._loop_lag),
        ]
        loops += [
            (f"consume:{c.stream}:{c.group}", partial(self._consume_loop, c))
            for c in self.consumers
        ]
        loops += [(getattr(t, "__name__", "task"), partial(t, self.stop)) for t in self.tasks]
        runners = [asyncio.create_task(self._supervise(n, f), name=n) for n, f in loops]
        await self.stop.wait()
        # Let handlers in flight finish (bounded), then cancel what still runs.
        if self._handler_tasks:
            await asyncio.wait(self._handler_tasks, timeout=5.0)
        for t in [*runners, *self._handler_tasks]:
            t.cancel()
        await asyncio.gather(*runners, *self._handler_tasks, return_exceptions=True)
        with contextlib.suppress(*REDIS_FAULTS):
            await self.redis.delete(self.keys.heartbeat(self.name))
        UP.labels(self.name).set(0)
        await self.close()
        log.info("%s: stopped", self.name)

    async def _supervise(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Keep one loop running until stop: a loop that fails or returns is restarted after
        a backoff, so a fault in one part never stops (or silently ends) the service."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while not self.stop.is_set():
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                TASK_RESTARTS.labels(self.name, name).inc()
                delay = backoff.next_delay()
                log.exception("%s: %s failed; restarting in %.2fs", self.name, name, delay)
                await self._sleep(delay)
                continue
            if not self.stop.is_set():
                TASK_RESTARTS.labels(self.name, name).inc()
                log.error("%s: %s returned unexpectedly; restarting", self.name, name)
                await self._sleep(backoff.next_delay())

    async def _until_store_ready(self) -> None:
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                for c in self.consumers:
                    try:
                        await ensure_group(self.redis, c.stream, c.group)
                    except redis.exceptions.ResponseError as e:
                        if not is_wrong_type(e):
                            raise
                        # the consume loop reports it and makes the group once it is a stream
                        log.error(
                            "%s: %s: %s",
                            self.name,
                            WRONG_KEY_TYPE,
                            await wrong_type(self.redis, c.stream, "stream"),
                        )
                return
            except START_FAULTS as e:
                fatal = start_fault(e)
                if fatal is not None:
                    raise fatal from None
                STORE_ERRORS.labels(self.name).inc()
                delay = backoff.next_delay()
                log.warning("%s: redis not ready (%s); retrying in %.2fs", self.name, e, delay)
                await self._sleep(delay)

    async def _sleep(self, s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), s)

    async def _loop_lag(self) -> None:
        """Observe how late a timer fires: a handler or poll holding the loop shows here."""
        lag = LOOP_LAG.labels(self.name)
        while not self.stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(LOOP_LAG_EVERY_S)
            lag.observe(max(0.0, time.monotonic() - t - LOOP_LAG_EVERY_S))

    # -- heartbeat --------------------------------------------------------------------------
    def heartbeat_payload(self) -> str:
        return json.dumps(
            {
                "service": self.name,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "version": __version__,
                "started_at": round(self.started_at, 3),
                "ts": round(time.time(), 3),
                "metrics_port": self.bound_metrics_port,
                "schema": SCHEMA,
                # clients (permitchain_client) find the shard of a symbol's streams by it
                "stream_shards": self.keys.shards,
            }
        )

    async def _heartbeat_loop(self) -> None:
        while not self.stop.is_set():
            try:
                await self.redis.set(
                    self.keys.heartbeat(self.name), self.heartbeat_payload(), ex=HEARTBEAT_TTL_S
                )
            except REDIS_FAULTS as e:
                STORE_ERRORS.labels(self.name).inc()
                log.warning("%s: heartbeat failed: %s", self.name, e)
            await self._sleep(HEARTBEAT_EVERY_S)

    # -- consuming --------------------------------------------------------------------------
    async def _consume_loop(self, c: Consumer) -> None:
        backoff = Backoff()
        own_pending = True  # first read our own pending entries (left by a previous run)
        last_claim = 0.0
        while not self.stop.is_set():
            try:
                if c.concurrent and len(c.in_flight) >= c.max_in_flight:
                    await asyncio.sleep(0.005)
                    continue
                if time.monotonic() - last_claim >= c.claim_every_s:
                    last_claim = time.monotonic()
                    await self._reclaim(c)
                entries = await xreadgroup_raw(
                    self.redis,
                    c.group,
                    self.consumer,
                    c.stream,
                    "0" if own_pending else ">",
                    count=c.count,
                    block_ms=None if own_pending else c.block_ms,
                )
                if entries:
                    await self._dispatch(c, entries)
                own_pending = False  # one pass over our own pending list, then new entries
                backoff.reset()
            except REDIS_FAULTS as e:
                STORE_ERRORS.labels(self.name).inc()
                delay = backoff.next_delay()
                log.warning(
                    "%s: %s read failed (%s); retrying in %.2fs", self.name, c.stream, e, delay
                )
                await self._sleep(delay)
            except redis.exceptions.ResponseError as e:
                if is_wrong_type(e):  # a stream key holds another type: say so, wait
                    await self._stream_wrong_type(c, backoff)
                    continue
                if "NOGROUP" in str(e):
                    with contextlib.suppress(*REDIS_FAULTS):
                        await ensure_group(self.redis, c.stream, c.group)
                    continue
                raise

    async def _stream_wrong_type(self, c: Consumer, backoff: Backoff) -> None:
        """A stream key holding another type (the consumer's stream, which nothing can be read
        from, or the dead-letter stream): one line naming it (``status`` shows it too) until an
        operator removes it, then a backoff."""
        with contextlib.suppress(*REDIS_FAULTS):
            for key in (c.stream, self.keys.deadletter):
                held = await self.redis.type(key)
                if held not in ("stream", "none"):
                    WRONG_TYPES.labels(self.name, "stream").inc()
                    log.error(
                        "%s: %s: %s",
                        self.name,
                        WRONG_KEY_TYPE,
                        WrongTypeError(key, str(held), "stream"),
                    )
        await self._sleep(max(backoff.next_delay(), 1.0))

    async def _reclaim(self, c: Consumer) -> None:
        """Take over entries idle in any consumer's pending list (a dead peer, or ourselves)."""
        claimed = await xautoclaim_raw(
            self.redis, c.stream, c.group, self.consumer, min_idle_ms=c.claim_idle_ms, count=c.count
        )
        fresh = [(i, f) for i, f in claimed if text_id(i) not in c.in_flight]
        if fresh:
            log.info("%s: reclaimed %d idle entries of %s", self.name, len(fresh), c.stream)
            await self._dispatch(c, fresh)

    async def _dispatch(self, c: Consumer, entries: list[RawEntry]) -> None:
        """Decode each entry (read raw) and hand it on: an entry whose bytes are not UTF-8 is
        dead-lettered (its fields escaped) and acknowledged here, the rest run the handler."""
        gone: list[str] = []
        live: list[tuple[str, dict[str, str]]] = []
        poison: list[tuple[str, dict[str, str], str]] = []
        for raw_id, raw_fields in entries:
            eid = text_id(raw_id)
            if eid in c.in_flight:
                continue
            if raw_fields is None:
                gone.append(eid)
                continue
            try:
                live.append((eid, decode_fields(raw_fields)))
            except NotUtf8 as e:
                poison.append((eid, escaped(raw_fields), str(e)))
                ENTRIES.labels(self.name, c.stream, "deadletter").inc()
        if gone:  # entries trimmed away while pending: nothing to do
            await self.redis.xack(c.stream, c.group, *gone)
        if poison:
            try:
                await self._ack(c, [], poison)
            except redis.exceptions.ResponseError as e:  # (left pending; the rest goes on)
                if not is_wrong_type(e):
                    raise
                log.error(
                    "%s: %s: %s; %d entries of %s left pending",
                    self.name,
                    WRONG_KEY_TYPE,
                    await wrong_type(self.redis, self.keys.deadletter, "stream"),
                    len(poison),
                    c.stream,
                )
        if not live:
            return
        for entry_id, _ in live:
            c.in_flight.add(entry_id)
        if c.concurrent:
            for entry_id, fields in live:
                t = asyncio.create_task(self._handle_batch(c, [(entry_id, fields)]))
                self._handler_tasks.add(t)
                t.add_done_callback(self._handler_tasks.discard)
        else:
            await self._handle_batch(c, live)

    async def _handle_batch(self, c: Consumer, live: list[tuple[str, dict[str, str]]]) -> None:
        deferred: set[str] = set()  # settled here, acknowledged later by the flusher
        try:
            errors = await self._run(c, live)
            ok, dead = self._classify(c, live, errors)
            if c.concurrent:
                # Handlers finish one by one: their acks go out together (one XACK for all
                # that finished in the same moment), the entries stay in flight until then.
                c.settled_ok += ok
                c.settled_dead += dead
                deferred = {*ok, *(d[0] for d in dead)}
                if deferred and (c.flusher is None or c.flusher.done()):
                    c.flusher = asyncio.create_task(self._flush_settled(c))
                    self._handler_tasks.add(c.flusher)
                    c.flusher.add_done_callback(self._handler_tasks.discard)
            else:
                await self._ack(c, ok, dead)
        finally:
            for entry_id, _ in live:  # the rest (acked, or pending for a retry) is out of flight
                if entry_id not in deferred:
                    c.in_flight.discard(entry_id)

    async def _flush_settled(self, c: Consumer) -> None:
        """Acknowledge (and dead-letter) what concurrent handlers settled, in batches."""
        while c.settled_ok or c.settled_dead:
            await asyncio.sleep(0)  # let handlers finishing in this moment join the batch
            ok, dead = c.settled_ok, c.settled_dead
            c.settled_ok, c.settled_dead = [], []
            try:
                await self._ack(c, ok, dead)
            except REDIS_FAULTS as e:  # left pending: reclaimed and handled again (idempotent)
                STORE_ERRORS.labels(self.name).inc()
                log.warning(
                    "%s: %s ack of %d entries failed: %s",
                    self.name,
                    c.stream,
                    len(ok) + len(dead),
                    e,
                )
            finally:
                for entry_id in [*ok, *(d[0] for d in dead)]:
                    c.in_flight.discard(entry_id)

    async def _run(
        self, c: Consumer, live: list[tuple[str, dict[str, str]]]
    ) -> dict[str, BaseException | None]:
        """Run the handler on each entry: in stream order within a partition (``c.partition``,
        e.g. the symbol), partitions concurrently. Returns each entry's error, or None."""
        out: dict[str, BaseException | None] = {}

        async def in_order(items: list[tuple[str, dict[str, str]]]) -> None:
            for entry_id, fields in items:
                try:
                    await c.handler(entry_id, fields)
                    out[entry_id] = None
                except Exception as e:  # classified in _classify
                    out[entry_id] = e

        if c.partition is None or len(live) == 1:
            await in_order(live)
            return out
        groups: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for entry_id, fields in live:
            groups.setdefault(c.partition(fields), []).append((entry_id, fields))
        gate = asyncio.Semaphore(c.max_parallel)  # well below the connection pool's size

        async def gated(items: list[tuple[str, dict[str, str]]]) -> None:
            async with gate:
                await in_order(items)

        await asyncio.gather(*(gated(g) for g in groups.values()))
        return out

    def _classify(
        self,
        c: Consumer,
        live: list[tuple[str, dict[str, str]]],
        errors: dict[str, BaseException | None],
    ) -> tuple[list[str], list[tuple[str, dict[str, str], str]]]:
        """Which entries are done (ack) and which cannot be handled (dead-letter); the rest
        stay pending for a retry."""
        ok: list[str] = []
        dead: list[tuple[str, dict[str, str], str]] = []
        for entry_id, fields in live:
            e = errors.get(entry_id)
            if e is None:
                outcome = "ok"
                ok.append(entry_id)
                c.failures.pop(entry_id, None)
            elif isinstance(e, WrongTypeError) or is_wrong_type(e):
                # a key of the wrong type does not heal by retrying: one named dead letter
                outcome = "deadletter"
                WRONG_TYPES.labels(self.name, "handler").inc()
                c.failures.pop(entry_id, None)
                dead.append((entry_id, fields, f"{WRONG_KEY_TYPE}: {e}"))
            elif isinstance(e, ContractError):
                outcome = "deadletter"
                dead.append((entry_id, fields, str(e)))
            elif isinstance(e, RETRYABLE):
                outcome = "store_error"
                STORE_ERRORS.labels(self.name).inc()
                log.warning("%s: %s %s left pending (store: %s)", self.name, c.stream, entry_id, e)
            else:
                n = c.failures.get(entry_id, 0) + 1
                c.failures[entry_id] = n
                log.error(
                    "%s: handler failed on %s %s (%d/%d)",
                    self.name,
                    c.stream,
                    entry_id,
                    n,
                    c.max_failures,
                    exc_info=e,
                )
                if n >= c.max_failures:
                    outcome = "deadletter"
                    c.failures.pop(entry_id, None)
                    dead.append((entry_id, fields, f"{type(e).__name__}: {e}"))
                else:
                    outcome = "error"
            ENTRIES.labels(self.name, c.stream, outcome).inc()
        return ok, dead

    async def _ack(
        self, c: Consumer, ok: list[str], dead: list[tuple[str, dict[str, str], str]]
    ) -> None:
        """Ack what is done and dead-letter what cannot be handled, in one pipeline."""
        if not ok and not dead:
            return
        pipe = self.redis.pipeline(transaction=False)
        for entry_id, fields, err in dead:
            log.error("%s: dead-letter %s %s: %s", self.name, c.stream, entry_id, err)
            DEADLETTERS.labels(self.name, c.stream).inc()
            pipe.xadd(
                self.keys.deadletter,
                _deadletter_fields(self.name, c, entry_id, fields, err),
                maxlen=DEADLETTER_MAXLEN,
                approximate=True,
            )
        pipe.xack(c.stream, c.group, *ok, *[d[0] for d in dead])
        await pipe.execute()


def _deadletter_fields(
    service: str, c: Consumer, entry_id: str, fields: dict[str, str], err: str
) -> dict[str, str]:
    return {
        "source": c.stream,
        "group": c.group,
        "entry_id": entry_id,
        "service": service,
        "fields": json.dumps(fields, default=str)[:65536],
        "error": err[:2000],
        "ts": f"{time.time():.6f}",
    }


def run_service(
    runner_factory: Callable[[], Awaitable[ServiceRunner]], *, parent_fd: int | None = None
) -> None:
    """Entry point helper: build the runner inside the loop, install signals, run. The
    process's garbage collector is tuned first and its start-up heap frozen once the runner
    is built (``runtime/gc_tuning.py``).

    Start-up faults leave as one :class:`ConfigError` naming the setting or resource (the
    caller prints it and exits 2): a setting the build refuses, a metrics port that cannot
    be bound, Redis refusing the credentials or a permission. A Redis that is down is waited
    for. ``parent_fd``: the supervision pipe's read end (``permitchain.lifecycle``);
    end-of-file on it (the parent died) stops the service as SIGTERM does, from the start."""
    gc_tuning.tune()

    async def main() -> None:
        starting = asyncio.Event()  # set by a signal or the parent's death while building
        to_stop = [starting]
        if parent_fd is not None:

            def parent_gone() -> None:
                for event in to_stop:
                    event.set()

            _watch_parent(parent_fd, parent_gone)
        runner = await _build(runner_factory, starting)
        if runner is None:
            return  # stopped while waiting for Redis
        to_stop.append(runner.stop)
        runner.install_signal_handlers()
        frozen = gc_tuning.freeze()
        log.info(
            "%s: gc thresholds %s, %d start-up objects frozen",
            runner.name,
            gc.get_threshold(),
            frozen,
        )
        await runner.run()

    if uvloop is not None:
        uvloop.run(main())
    else:  # pragma: no cover - uvloop is a declared dependency on Linux
        asyncio.run(main())


async def _build(
    runner_factory: Callable[[], Awaitable[ServiceRunner]], stop: asyncio.Event
) -> ServiceRunner | None:
    """Build the runner; while Redis is down, wait for it (as a running service does), until
    ``stop`` (SIGTERM/SIGINT, or the parent's death: then None). A fault no retry mends is a
    :class:`ConfigError`."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    backoff = Backoff()
    while True:
        try:
            return await runner_factory()
        except START_FAULTS as e:
            fatal = start_fault(e)
            if fatal is not None:
                raise fatal from None
            delay = backoff.next_delay()
            log.warning("redis not ready while starting (%s); retrying in %.2fs", e, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return None


def start_fault(e: BaseException) -> ConfigError | None:
    """A Redis error that waiting does not mend, as the start-up fault naming REDIS_URL
    (wrong credentials, a user without the permissions the service needs); else None."""
    if isinstance(e, redis.exceptions.AuthenticationError):
        return ConfigError(f"REDIS_URL: authentication failed ({e})")
    if isinstance(e, redis.exceptions.NoPermissionError):
        return ConfigError(f"REDIS_URL: the user lacks a permission ({e})")
    return None


def _watch_parent(fd: int, on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` when the supervision pipe reports end-of-file (the parent is gone)."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # nothing is ever written; ignore
        loop.remove_reader(fd)
        log.warning("the process that started this service is gone: stopping")
        on_gone()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
