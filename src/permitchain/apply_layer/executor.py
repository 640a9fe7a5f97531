"""Executor: plan → wait for both permits (event-driven) → atomic consume by value → one
reduce-only order → result.

Waiting without polling: every gatekeeper appends ``{plan_id, layer}`` to the permit-event
stream right after writing its permit. One reader task per process (one connection) wakes the
plan's waiter; the waiter then runs ``consume_permits.lua``. Thousands of plans wait at once:
a waiting plan holds no connection, and at most ``MAX_ACTIVE`` plans talk to Redis or the
exchange at a time. At ``APPLY_PERMIT_WAIT_MS`` the script runs once more in ``final`` mode
and decides ``permit_timeout`` if a permit is still missing.

Exactly once: the consume script writes ``quantum:exec:{plan}`` (``permitted``) as it
consumes; the move to ``submitted`` (with everything recovery needs) is a compare-and-set
made before the order is sent; the client order id comes from the plan id; after a timeout
the order is looked up by that id, never re-sent; the result is published in the same atomic
step as the exec record's final state (see ``exec_store``, ``orders``, ``resolver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

import redis.exceptions
from prometheus_client import Counter, Histogram

from permitchain.apply_layer import gate
from permitchain.apply_layer.exec_store import FINAL_GUARD, ExecStore
from permitchain.apply_layer.orders import OrderDesk, Submission, latency_ms
from permitchain.apply_layer.reconcile import Reconciler
from permitchain.apply_layer.resolver import Resolver, sender_id
from permitchain.apply_layer.stops import StopBook
from permitchain.contract.errors import ContractError
from permitchain.contract.keys import GROUP_EXECUTOR, Keys
from permitchain.contract.models import (
    EXECUTOR_EXTERNAL,
    GovernorPermit,
    P33Allow,
    Plan,
    Result,
    ResultStatus,
    fmt_decimal,
)
from permitchain.contract.reasons import (
    ALREADY_EXECUTED,
    BEYOND_RETENTION,
    DRY_RUN,
    MISSING_BOTH,
    MISSING_GOVERNOR,
    MISSING_P33,
    NOT_UTF8,
    PERMIT_INVALID,
    PLAN_EXPIRED,
    POSITION_MODE_CHANGED,
    RECOVERED_UNSENT,
    TRADING_HALTED,
    WRONG_KEY_TYPE,
)
from permitchain.contract.settings import Settings
from permitchain.contract.signing import GOVERNOR, P33
from permitchain.contract.trading_state import TradingState, read_trading_state
from permitchain.exchange.base import Exchange
from permitchain.keyfiles import verifier_for
from permitchain.operator_exit import is_operator_plan, operator_problem
from permitchain.runtime.audit import add_audit
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.clock import Clock
from permitchain.runtime.entries import (
    NotUtf8,
    RawFields,
    decode_fields,
    escaped,
    text_id,
    xread_raw,
)
from permitchain.runtime.service import ENTRIES, Consumer, shard_consumers
from permitchain.store import REDIS_FAULTS, AsyncRedis, wrong_type

log = logging.getLogger("permitchain.executor")
MAX_ACTIVE = 16  # plans talking to Redis or the exchange at once (waiting plans hold nothing)
#: Plans whose permit events are remembered (events may arrive before their plan is read).
SEEN_MAX = 50_000
#: Both permits announced but the consume still saw one missing (a write not visible yet to
#: this connection, e.g. another node): look again after this long, not at the deadline.
RETRY_S = 0.005

#: The consume step's verdicts that mean "a permit has not arrived yet: wait".
WAIT_VERDICTS = {MISSING_GOVERNOR, MISSING_P33, MISSING_BOTH}
#: A plan this close to EXEC_RECORD_TTL_S old is treated as beyond it (clocks differ a little).
RETENTION_MARGIN_S = 60

SKIPPED = Counter(
    "apply_plans_skipped_total", "Plans the executor read but left alone, by reason", ["reason"]
)

PERMIT_WAIT = Histogram(
    "apply_permit_wait_seconds",
    "Plan read → both permits consumed, or blocked",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5),
)


def _entry_ms(entry_id: str) -> float:
    """A stream entry id's server time in ms (0 when it is not an auto id)."""
    head = entry_id.partition("-")[0]
    return float(head) if head.isdigit() else 0.0


def _ms(seconds: float) -> Decimal:
    return Decimal(round(seconds * 1000, 3)).quantize(Decimal("0.001"))


class Executor:
    def __init__(
        self, r: AsyncRedis, keys: Keys, settings: Settings, clock: Clock, exchange: Exchange
    ) -> None:
        self.redis, self.keys, self.settings, self.clock, self.exchange = (
            r,
            keys,
            settings,
            clock,
            exchange,
        )
        self.store = ExecStore(r, keys, settings.exec_record_ttl_s)
        self.desk = OrderDesk(exchange, self.store, clock, StopBook(r, keys))
        self.resolver = Resolver(
            self.store, self.desk, exchange, clock, report_s=settings.gate_report_s
        )
        #: public keys only (governor, P3.3, operator): this process can verify, never sign
        self.verifier = verifier_for(settings)
        #: the exchange reconciliation (apply_layer.reconcile): orders stop while it says so
        self.reconciler: Reconciler | None = None
        self.waiters: dict[str, asyncio.Event] = {}
        self.active: set[str] = set()
        self.slots = asyncio.Semaphore(MAX_ACTIVE)
        self.symbol_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.events_ready = asyncio.Event()
        #: plan id -> layers whose permit event was read (insertion order: oldest first)
        self.seen: dict[str, set[str]] = {}
        #: server time (ms) from which every permit event is read: a plan added to the stream
        #: after it has all its events seen here, so it need not be tried before them.
        self.events_from_ms = float("inf")

    def consumers(self) -> list[Consumer]:
        """One consumer per owned shard of the plan stream. Many plans wait for permits at
        once: one task each, bounded by max_in_flight (per shard)."""
        return shard_consumers(
            self.keys.plan_stream_shard,
            self.settings.owned_shards,
            GROUP_EXECUTOR,
            self.handle,
            concurrent=True,
        )

    async def recover_all(self) -> int:
        return await self.resolver.recover_all()

    # -- permit events --------------------------------------------------------------------
    async def permit_events(self, stop: asyncio.Event) -> None:
        """One reader per owned shard of the permit-event stream (a plan's permit events are
        in its own shard), for all waiters: wake the plan named by each permit event. Ready
        (``events_ready``) once every reader has its starting point; ``events_from_ms`` is
        the latest of them, so a plan added after it has all its events read here."""
        shards = self.settings.owned_shards
        started: dict[int, float] = {}
        async with asyncio.TaskGroup() as readers:
            for shard in shards:
                readers.create_task(self._permit_events(shard, stop, started, len(shards)))

    async def _permit_events(
        self, shard: int, stop: asyncio.Event, started: dict[int, float], readers: int
    ) -> None:
        stream = self.keys.permit_event_stream_shard(shard)
        last = "$"
        backoff = Backoff()
        while not stop.is_set():
            try:
                if last == "$":
                    # Resolve "$" to a concrete id once, so no event between reads is lost.
                    info = await self.redis.xinfo_stream(stream)
                    last = str(info.get("last-generated-id") or "0-0")
                    sec, usec = await self.redis.time()
                    started[shard] = int(sec) * 1000 + int(usec) // 1000 + 1
                    if len(started) == readers:
                        self.events_from_ms = max(started.values())
                        self.events_ready.set()
                resp = await xread_raw(self.redis, {stream: last}, count=1000, block_ms=1000)
                for _stream, entries in resp:
                    for raw_id, raw_fields in entries:
                        last = text_id(raw_id)
                        self.permit_event(last, raw_fields or {}, stream)
                backoff.reset()
            except REDIS_FAULTS as e:
                delay = backoff.next_delay()
                log.warning("permit events: redis: %s; retrying in %.2fs", e, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            except redis.exceptions.ResponseError as e:
                if "no such key" not in str(e).lower():
                    raise
                await self.redis.xadd(stream, {"plan_id": "", "layer": "init"})

    def permit_event(self, entry_id: str, raw: RawFields, stream: str) -> None:
        """One permit event, read raw: decoded here; one that is not UTF-8 is skipped with a
        line and a metric (a wake-up only: the plan's deadline decides without it)."""
        try:
            fields = decode_fields(raw)
        except NotUtf8 as e:
            ENTRIES.labels("apply-layer", stream, NOT_UTF8).inc()
            log.warning("permit events: %s skipped: %s (fields %s)", entry_id, e, escaped(raw))
            return
        self.permit_seen(fields.get("plan_id", ""), fields.get("layer", ""))

    def permit_seen(self, plan_id: str, layer: str) -> None:
        """A permit event: remember its layer and wake the plan's waiter."""
        layers = self.seen.get(plan_id)
        if layers is None:
            if len(self.seen) >= SEEN_MAX:  # forget the oldest (a plan another instance runs)
                del self.seen[next(iter(self.seen))]
            layers = self.seen[plan_id] = set()
        layers.add(layer)
        ev = self.waiters.get(plan_id)
        if ev is not None:
            ev.set()

    def both_seen(self, plan_id: str) -> bool:
        return len(self.seen.get(plan_id, ())) >= 2

    # -- plan handling --------------------------------------------------------------------
    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        plan = Plan.from_fields(fields)
        if not plan.is_execute:
            return
        if plan.plan_id in self.active:  # the same plan twice in this process: one runs
            log.info("[PERMIT_WAIT] SKIP plan=%s reason=already_active", plan.plan_id)
            return
        self.active.add(plan.plan_id)
        try:
            await self._handle(plan, _entry_ms(entry_id))
        finally:
            self.active.discard(plan.plan_id)

    async def _handle(self, plan: Plan, entry_ms: float) -> None:
        await self.events_ready.wait()
        t0 = time.monotonic()
        if (
            self.clock.now() - plan.created_at
            >= self.settings.exec_record_ttl_s - RETENTION_MARGIN_S
        ):
            await self.beyond_retention(plan)
            return
        if self.clock.now() > min(plan.expires_at, plan.created_at + self.settings.plan_max_age_s):
            async with self.slots:
                state = await self.store.block_new(
                    plan.plan_id, plan.symbol, PLAN_EXPIRED, "plan older than PLAN_MAX_AGE_S"
                )
                await self.resume(plan, state)
            return
        verdict = await self.wait_and_consume(plan, t0, fresh=entry_ms >= self.events_from_ms)
        wait_s = time.monotonic() - t0
        v = verdict["verdict"]
        if v == "ok":
            await self.execute(plan, verdict, wait_s)
            return
        async with self.slots:
            if v == ALREADY_EXECUTED:
                await self.resume(plan, str(verdict.get("state", "")))
            else:
                await self.blocked(plan, v, str(verdict.get("detail", "")), wait_s, verdict)

    async def beyond_retention(self, plan: Plan) -> None:
        """A plan read after its exec record would have expired (a pending entry picked up
        after a long outage): expired, so it can never execute, and whether it ran once cannot
        be told any more. Nothing is written for it but an audit entry: no exec record and no
        result, so a plan that had its result never gets a second one."""
        age_s = self.clock.now() - plan.created_at
        log.warning(
            "[PERMIT_WAIT] SKIP plan=%s reason=%s age_s=%d", plan.plan_id, BEYOND_RETENTION, age_s
        )
        SKIPPED.labels(BEYOND_RETENTION).inc()
        await add_audit(
            self.redis,
            self.keys,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            layer="executor",
            decision="SKIPPED",
            reason=BEYOND_RETENTION,
            context={"age_s": round(age_s), "exec_record_ttl_s": self.settings.exec_record_ttl_s},
        )

    async def consume(self, plan: Plan, mode: str) -> dict[str, Any]:
        async with self.slots:
            return await self.store.consume(plan.plan_id, plan.symbol, mode)

    async def wait_and_consume(
        self, plan: Plan, t0: float, *, fresh: bool = False
    ) -> dict[str, Any]:
        """Consume as soon as both permits are there; at the deadline, once more in ``final``
        mode. A ``fresh`` plan (added after the event reader started) is tried only once both
        gatekeepers announced their permit: one consume per plan, not one per event. Any other
        plan (a redelivery, a restart: its events may predate the reader) is tried at once and
        after every event. Events only save work: the deadline decides without them."""
        pid = plan.plan_id
        ev = self.waiters.setdefault(pid, asyncio.Event())
        deadline = t0 + self.settings.permit_wait_ms / 1000
        try:
            while True:
                ev.clear()
                if not fresh or self.both_seen(pid):
                    verdict = await self.consume(plan, "try")
                    if verdict["verdict"] not in WAIT_VERDICTS:
                        return verdict
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait_s = min(remaining, RETRY_S) if self.both_seen(pid) else remaining
                # A timer that sets the event: the loop above looks again either way (cheaper
                # than wait_for, which makes a task per wait).
                timer = asyncio.get_running_loop().call_later(wait_s, ev.set)
                try:
                    await ev.wait()
                finally:
                    timer.cancel()
            return await self.consume(plan, "final")
        finally:
            self.waiters.pop(pid, None)
            self.seen.pop(pid, None)

    async def blocked(
        self,
        plan: Plan,
        reason: str,
        detail: str,
        wait_s: float,
        verdict: dict[str, Any],
        from_state: str = "blocked",
    ) -> None:
        """Publish the plan's blocked result (once), and the BLOCK line with the permits' TTLs."""
        if "gov_ttl" in verdict and "p33_ttl" in verdict:
            gov_ttl, p33_ttl = int(verdict["gov_ttl"]), int(verdict["p33_ttl"])
        else:
            gov_ttl, p33_ttl = await self.store.ttls(plan.plan_id)
        log.info(
            "[PERMIT_WAIT] BLOCK plan=%s reason=%s gov_ttl=%d p33_ttl=%d",
            plan.plan_id,
            reason,
            gov_ttl,
            p33_ttl,
        )
        if wait_s > 0:  # not for blocks written again on a redelivery
            PERMIT_WAIT.observe(wait_s)
        result = Result(
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            executed=False,
            status=ResultStatus.BLOCKED,
            reason=reason,
            error=detail[:500],
            permit_wait_ms=_ms(wait_s),
            chain_latency_ms=self._latency_ms(plan),
            ts=self.clock.now(),
        )
        await self.store.publish(
            result,
            from_states=(from_state,),
            to="blocked",
            fields={"reason": reason, "detail": detail[:500]},
            context={"gov_ttl": gov_ttl, "p33_ttl": p33_ttl, "detail": detail},
        )

    async def resume(self, plan: Plan, state: str) -> None:
        """The plan already has an exec record: a redelivery, or a restart mid-flight."""
        h = await self.store.get(plan.plan_id)
        if state == "blocked" and FINAL_GUARD not in h:
            # Blocked, but the process died before the result: publish it now (once).
            await self.blocked(plan, h.get("reason", ""), h.get("detail", ""), 0.0, {})
            return
        if state == "permitted":
            # Consumed, but no order was sent: the handler died (its entry was redelivered).
            # The move to submitted is a compare-and-set, so this can never race a send.
            await self.blocked(
                plan, RECOVERED_UNSENT, "consumed, never sent", 0.0, {}, from_state="permitted"
            )
            return
        if state in ("submitted", "unknown", gate.GRANTED, gate.CLAIMED):
            await self.resolver.resolve(plan.plan_id)
        log.info("[PERMIT_WAIT] SKIP plan=%s reason=already_executed state=%s", plan.plan_id, state)

    # -- the order ------------------------------------------------------------------------
    def permit_problem(self, gov_raw: str, p33_raw: str) -> tuple[str, P33Allow | None]:
        """After an ``ok`` consume: the permits parse as the contract says and each carries a
        valid signature of its issuer (``Verifier.problem``: a public key, or outside
        production an HMAC secret, or no key configured at all). Returns what is wrong (or
        ''), and the P3.3 permit as parsed."""
        try:
            gov, gov_obj = GovernorPermit.from_json_with_obj(gov_raw)
            p33, p33_obj = P33Allow.from_json_with_obj(p33_raw)
        except ContractError as e:
            return str(e), None
        if not gov.granted:
            return "governor permit does not grant", None
        now = self.clock.now()
        problem = self.verifier.problem(GOVERNOR, gov_obj, now) or self.verifier.problem(
            P33, p33_obj, now
        )
        return (problem, None) if problem else ("", p33)

    async def execute(self, plan: Plan, verdict: dict[str, Any], wait_s: float) -> None:
        problem, p33 = self.permit_problem(verdict["gov"], verdict["p33"])
        # an operator's emergency exit: its request verified here too, then no halt applies
        emergency = is_operator_plan(plan)
        if emergency and not problem:
            problem = operator_problem(plan, self.verifier, self.clock.now())
        if problem or p33 is None:
            async with self.slots:
                await self.blocked(plan, PERMIT_INVALID, problem, wait_s, verdict, "permitted")
            return
        # A bot through the gate places its own orders, its stop included.
        external = plan.executor == EXECUTOR_EXTERNAL
        stop = next((s for s in plan.steps if s.type == "stop_market_reduce_only"), None)
        stop = None if external else stop
        sub = Submission(
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            side="SELL" if p33.side == "LONG" else "BUY",
            qty=p33.safe_close_qty,
            close=any(s.type == "market_reduce_only" for s in plan.steps),
            position_amt=abs(p33.exchange_position_amt),
            stop_price=stop.price if stop is not None else None,
            proposal_ts=plan.proposal_ts,
            permit_wait_ms=_ms(wait_s),
        )
        if self.reconciler is not None and self.reconciler.stop_reason:
            async with self.slots:
                await self.blocked(
                    plan,
                    POSITION_MODE_CHANGED,
                    self.reconciler.stop_reason,
                    wait_s,
                    verdict,
                    "permitted",
                )
            return
        log.info(
            "[PERMIT_WAIT] OK plan=%s wait_ms=%d safe_qty=%s",
            plan.plan_id,
            round(wait_s * 1000),
            fmt_decimal(sub.qty),
        )
        PERMIT_WAIT.observe(wait_s)
        # One order per symbol at a time; a plan queued behind its symbol holds no slot.
        async with self.symbol_locks[plan.symbol], self.slots:
            if plan.mode == "dry_run" or self.settings.apply_mode.value == "dry_run":
                if not emergency and await self.halted():
                    await self.blocked(
                        plan, TRADING_HALTED, "HALTED at order time", wait_s, {}, "permitted"
                    )
                    return
                await self.store.publish(
                    Result(
                        plan_id=plan.plan_id,
                        symbol=plan.symbol,
                        executed=False,
                        status=ResultStatus.DRY_RUN,
                        reason=DRY_RUN,
                        side=sub.side,
                        requested_qty=sub.qty,
                        permit_wait_ms=sub.permit_wait_ms,
                        chain_latency_ms=self._latency_ms(plan),
                        ts=self.clock.now(),
                    ),
                    from_states=("permitted",),
                    to="dry_run",
                )
                return
            if external:  # the gate: a grant for the bot to claim instead of an order
                if await self.halted():
                    await self.blocked(
                        plan, TRADING_HALTED, "HALTED at grant time", wait_s, {}, "permitted"
                    )
                    return
                await gate.grant(
                    self.store, plan, sub, self.clock.now(), self.settings.gate_claim_s
                )
                return
            # The trading state is read in the same round trip as the move to submitted (read
            # first): HALTED (or unreadable) → blocked from submitted, nothing sent.
            trading, moved, state = await self.store.submit(
                plan.plan_id,
                fields={
                    **sub.to_fields(),
                    "submitted_at": f"{self.clock.now():.6f}",
                    "sender": sender_id(),
                },
            )
            if not moved and state == WRONG_KEY_TYPE:  # the open index: nothing sent
                err = await wrong_type(self.redis, self.store.open_key, "zset")
                await self.blocked(plan, WRONG_KEY_TYPE, str(err), wait_s, {}, "permitted")
                return
            if not moved:
                log.warning("plan %s: not sent, its exec record is %s", plan.plan_id, state)
                return
            if trading is TradingState.HALTED and not emergency:
                await self.blocked(
                    plan, TRADING_HALTED, "HALTED at order time", wait_s, {}, "submitted"
                )
                return
            order, error_reason, error = await self.desk.send(sub) if sub.close else (None, "", "")
            await self.desk.conclude(sub, order, error_reason, error, from_state="submitted")

    def _latency_ms(self, plan: Plan) -> Decimal:
        return latency_ms(plan.proposal_ts, self.clock.now())

    async def halted(self) -> bool:
        """Trading state right before the order, read the governor's fail-closed way: a wrong
        key type, garbage or a read error counts as HALTED."""
        try:
            return await read_trading_state(self.redis, self.keys) is TradingState.HALTED
        except REDIS_FAULTS:
            return True
