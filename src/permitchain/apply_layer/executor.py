"""Executor: plan → wait for both permits (event-driven) → atomic consume by value → one
reduce-only order → result.

Waiting without polling: every gatekeeper appends ``{plan_id, layer}`` to the permit-event
stream right after writing its permit. One reader task per process (one connection) wakes the
plan's waiter; the waiter then runs ``consume_permits.lua``. Thousands of plans wait at once
on one connection. At ``APPLY_PERMIT_WAIT_MS`` the script runs once more in ``final`` mode and
decides ``permit_timeout`` if a permit is still missing.

Exactly once: the script writes ``quantum:exec:{plan}`` as it consumes; ``submitted`` is
written before the order is sent; the client order id is derived from the plan id; after a
timeout the order is looked up by that id, never re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Histogram
from redis.asyncio import Redis

from permitchain.errors import (
    ContractError,
    ExchangeError,
    OrderOutcomeUnknown,
    OrderRejected,
)
from permitchain.exchange.base import Exchange, OrderInfo, OrderStatus, Side
from permitchain.governor.policy import TradingState, parse_trading_state
from permitchain.keys import GROUP_EXECUTOR, Keys
from permitchain.models import SCHEMA, P33Allow, Plan, Result, ResultStatus, fmt_decimal
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.runtime.service import Backoff, Consumer
from permitchain.scripts import Scripts
from permitchain.settings import Settings
from permitchain.signing import verify
from permitchain.store import REDIS_FAULTS

log = logging.getLogger("permitchain.executor")
LAYER = "executor"
EXEC_TTL_S = 7 * 86400
RESULT_MAXLEN = 100_000
LOOKUP_ATTEMPTS = 5

# Executor reason codes (DESIGN.md §4) beyond the script's verdicts.
EXCHANGE_REJECTED = "exchange_rejected"
EXCHANGE_UNKNOWN = "exchange_unknown"
TRADING_HALTED = "trading_halted"
PERMIT_INVALID = "permit_invalid"
PLAN_EXPIRED = "plan_expired"
WAIT_VERDICTS = {"missing_governor", "missing_p33", "missing_both"}

EXEC_STATUS = Counter("apply_executions_total", "Executor outcomes", ["symbol", "status", "reason"])
PERMIT_WAIT = Histogram(
    "apply_permit_wait_seconds", "Time from plan read to both permits consumed (or block)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5),
)  # fmt: skip
CHAIN_LATENCY = Histogram(
    "apply_chain_latency_seconds", "Proposal created → result on the stream",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip


def client_order_id(plan_id: str, suffix: str = "") -> str:
    """Deterministic from the plan: the same plan can never make a second order."""
    return f"pc-{plan_id}{suffix}"


class Executor:
    def __init__(self, r: Redis, keys: Keys, settings: Settings, clock: Clock,
                 exchange: Exchange) -> None:  # fmt: skip
        self.r, self.k, self.s, self.clock, self.ex = r, keys, settings, clock, exchange
        self.scripts = Scripts(r)
        self.waiters: dict[str, asyncio.Event] = {}
        self.symbol_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.events_ready = asyncio.Event()

    def consumer(self) -> Consumer:
        # Many plans wait for permits at once: one task each, bounded by max_in_flight.
        return Consumer(self.k.plan_stream, GROUP_EXECUTOR, self.handle, concurrent=True)

    # -- permit events --------------------------------------------------------------------
    async def permit_events(self, stop: asyncio.Event) -> None:
        """One reader for all waiters: wake the plan named by each permit event."""
        last = "$"
        backoff = Backoff()
        while not stop.is_set():
            try:
                if last == "$":
                    # Resolve "$" to a concrete id once, so no event between reads is lost.
                    info = await self.r.xinfo_stream(self.k.permit_event_stream)
                    last = info.get("last-generated-id") or "0-0"
                    self.events_ready.set()
                resp = await self.r.xread({self.k.permit_event_stream: last}, count=1000,
                                          block=1000)  # fmt: skip
                for _stream, entries in resp or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        ev = self.waiters.get(fields.get("plan_id", ""))
                        if ev is not None:
                            ev.set()
                backoff.reset()
            except REDIS_FAULTS as e:
                delay = backoff.next_delay()
                log.warning("permit events: redis: %s; retrying in %.2fs", e, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            except Exception as e:
                if "no such key" in str(e).lower():
                    await self.r.xadd(self.k.permit_event_stream, {"plan_id": "", "layer": "init"})
                    continue
                raise

    # -- plan handling --------------------------------------------------------------------
    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        plan = Plan.from_fields(fields)
        if not plan.is_execute:
            return
        await self.events_ready.wait()
        t0 = time.monotonic()
        if self.clock.now() > min(plan.expires_at, plan.created_at + self.s.plan_max_age_s):
            await self.block(plan, PLAN_EXPIRED, "plan older than PLAN_MAX_AGE_S", 0.0)
            return
        verdict = await self.wait_and_consume(plan, t0)
        wait_s = time.monotonic() - t0
        PERMIT_WAIT.observe(wait_s)
        v = verdict["verdict"]
        if v == "ok":
            await self.execute(plan, verdict, wait_s)
        elif v == "already_executed":
            await self.resume(plan, verdict.get("state", ""))
        else:
            await self.blocked_result(plan, v, str(verdict.get("detail", "")), wait_s, verdict)

    async def consume(self, plan: Plan, mode: str) -> dict[str, Any]:
        raw = await self.scripts.consume_permits(
            keys=[self.k.permit_governor(plan.plan_id), self.k.permit_p33(plan.plan_id),
                  self.k.exec_record(plan.plan_id)],
            args=[plan.plan_id, plan.symbol, SCHEMA, mode, EXEC_TTL_S],
        )  # fmt: skip
        out: dict[str, Any] = json.loads(raw)
        return out

    async def wait_and_consume(self, plan: Plan, t0: float) -> dict[str, Any]:
        ev = self.waiters.setdefault(plan.plan_id, asyncio.Event())
        deadline = t0 + self.s.permit_wait_ms / 1000
        try:
            while True:
                ev.clear()
                verdict = await self.consume(plan, "try")
                if verdict["verdict"] not in WAIT_VERDICTS:
                    return verdict
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), remaining)
            final = await self.consume(plan, "final")
            if final["verdict"] == "permit_timeout":
                final.update(gov_ttl=verdict.get("gov_ttl"), p33_ttl=verdict.get("p33_ttl"))
            return final
        finally:
            self.waiters.pop(plan.plan_id, None)

    async def block(self, plan: Plan, reason: str, detail: str, wait_s: float) -> None:
        state = await self.scripts.block_plan(
            keys=[self.k.exec_record(plan.plan_id)],
            args=[reason, detail, plan.plan_id, plan.symbol, EXEC_TTL_S],
        )
        if state != "blocked":
            await self.resume(plan, state)
            return
        await self.blocked_result(plan, reason, detail, wait_s, {})

    async def blocked_result(self, plan: Plan, reason: str, detail: str, wait_s: float,
                             verdict: dict[str, Any]) -> None:  # fmt: skip
        log.info("[PERMIT_WAIT] BLOCK plan=%s reason=%s gov_ttl=%s p33_ttl=%s", plan.plan_id,
                 reason, verdict.get("gov_ttl", "-"), verdict.get("p33_ttl", "-"))  # fmt: skip
        await self.finish(plan, Result(
            plan_id=plan.plan_id, symbol=plan.symbol, executed=False, status=ResultStatus.BLOCKED,
            reason=reason, error=detail[:500], permit_wait_ms=_ms(wait_s), ts=self.clock.now(),
        ), exec_state=None, context={"verdict": verdict})  # fmt: skip

    async def resume(self, plan: Plan, state: str) -> None:
        """The plan already has an exec record (a redelivery, or a restart mid-flight)."""
        if state in ("submitted", "permitted"):
            await self.recover(plan.plan_id)
        else:
            await self.complete_result(plan)
        log.info("[PERMIT_WAIT] SKIP plan=%s reason=already_executed state=%s", plan.plan_id, state)

    async def complete_result(self, plan: Plan) -> None:
        """A terminal exec record whose result was never written (the executor died between
        the two): write it now from the record. ``finish`` writes a plan's result once."""
        h: dict[str, str] = await self.r.hgetall(self.k.exec_record(plan.plan_id))
        if not h or h.get("result_ts") or h.get("state") != "blocked":
            return
        await self.blocked_result(plan, h.get("reason", "blocked"), h.get("detail", ""), 0.0, {})

    # -- the order ------------------------------------------------------------------------
    async def execute(self, plan: Plan, verdict: dict[str, Any], wait_s: float) -> None:
        gov, p33_raw = json.loads(verdict["gov"]), verdict["p33"]
        if self.s.signing_enabled:
            gk = self.s.permit_key_governor.get_secret_value()  # type: ignore[union-attr]
            pk = self.s.permit_key_p33.get_secret_value()  # type: ignore[union-attr]
            if not (verify(gov, gk) and verify(json.loads(p33_raw), pk)):
                await self._set_exec(plan.plan_id, state="blocked", reason=PERMIT_INVALID)
                await self.blocked_result(plan, PERMIT_INVALID, "bad signature", wait_s, {})
                return
        try:
            p33 = P33Allow.from_json(p33_raw)
        except ContractError as e:
            await self._set_exec(plan.plan_id, state="blocked", reason=PERMIT_INVALID)
            await self.blocked_result(plan, PERMIT_INVALID, str(e), wait_s, {})
            return
        qty = p33.safe_close_qty
        side: Side = "SELL" if p33.side == "LONG" else "BUY"
        log.info("[PERMIT_WAIT] OK plan=%s wait_ms=%d safe_qty=%s", plan.plan_id,
                 round(wait_s * 1000), fmt_decimal(qty))  # fmt: skip
        async with self.symbol_locks[plan.symbol]:
            state = parse_trading_state(await self.r.get(self.k.trading_state))
            if state is TradingState.HALTED:
                await self._set_exec(plan.plan_id, state="blocked", reason=TRADING_HALTED)
                await self.blocked_result(plan, TRADING_HALTED, "HALTED at order time", wait_s, {})
                return
            if plan.mode == "dry_run" or self.s.apply_mode.value == "dry_run":
                await self.finish(plan, Result(
                    plan_id=plan.plan_id, symbol=plan.symbol, executed=False,
                    status=ResultStatus.DRY_RUN, reason="dry_run", side=side, requested_qty=qty,
                    permit_wait_ms=_ms(wait_s), ts=self.clock.now(),
                ), exec_state="dry_run")  # fmt: skip
                return
            await self.place(plan, p33, side, qty, wait_s)

    async def place(self, plan: Plan, p33: P33Allow, side: Side, qty: Decimal,
                    wait_s: float) -> None:  # fmt: skip
        closes = [s for s in plan.steps if s.type == "market_reduce_only"]
        stop = next((s for s in plan.steps if s.type == "stop_market_reduce_only"), None)
        coid = client_order_id(plan.plan_id)
        order: OrderInfo | None = None
        reason, error = "", ""
        if closes:
            await self._set_exec(plan.plan_id, state="submitted", client_order_id=coid,
                                 qty=fmt_decimal(qty), side=side,
                                 submitted_at=f"{time.time():.6f}")  # fmt: skip
            try:
                order = await self.ex.place_reduce_only_market(plan.symbol, side, qty, coid)
                if order.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
                    order = await self.lookup(plan.symbol, coid, want_final=True) or order
            except OrderRejected as e:
                reason, error = EXCHANGE_REJECTED, f"{e.code}: {e}"
            except OrderOutcomeUnknown as e:
                log.warning("order %s outcome unknown (%s): looking it up", coid, e)
                order = await self.lookup(plan.symbol, coid, want_final=True)
                if order is None:
                    reason, error = EXCHANGE_UNKNOWN, str(e)
            except ExchangeError as e:
                order = await self.lookup(plan.symbol, coid, want_final=True)
                if order is None:
                    reason, error = EXCHANGE_UNKNOWN, str(e)
        result = self._result(plan, order, side, qty, reason, error, wait_s, coid if closes else "")
        if (
            stop is not None
            and stop.price is not None
            and result.status not in (ResultStatus.REJECTED, ResultStatus.UNKNOWN)
        ):
            remaining = abs(p33.exchange_position_amt) - result.filled_qty if closes else qty
            await self.place_stop(plan, side, stop.price, remaining)
        state = {ResultStatus.FILLED: "filled", ResultStatus.PARTIALLY_FILLED: "filled",
                 ResultStatus.REJECTED: "rejected"}.get(result.status, "unknown")  # fmt: skip
        if not closes:
            state = "filled"
        await self.finish(
            plan,
            result,
            exec_state=state,
            context={"order_id": result.order_id, "client_order_id": coid},
        )

    async def place_stop(self, plan: Plan, side: Side, price: Decimal, qty: Decimal) -> None:
        if qty <= 0:
            return
        try:
            o = await self.ex.place_stop_market(plan.symbol, side, price, qty,
                                                client_order_id(plan.plan_id, "-sl"))  # fmt: skip
            log.info("[SL] plan=%s symbol=%s stop=%s qty=%s order=%s", plan.plan_id, plan.symbol,
                     fmt_decimal(price), fmt_decimal(qty), o.order_id)  # fmt: skip
        except ExchangeError as e:
            log.error("[SL] plan=%s stop order failed: %s", plan.plan_id, e)

    async def lookup(self, symbol: str, coid: str, *, want_final: bool) -> OrderInfo | None:
        """Look the order up by client order id (never re-send). Waits briefly for a final state."""
        backoff = Backoff(base_s=0.05, cap_s=0.5)
        found: OrderInfo | None = None
        for _ in range(LOOKUP_ATTEMPTS):
            try:
                found = await self.ex.fetch_order(symbol, coid)
            except ExchangeError as e:
                log.warning("lookup %s failed: %s", coid, e)
            if found is not None and (not want_final or found.status not in (
                    OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)):  # fmt: skip
                return found
            await asyncio.sleep(backoff.next_delay())
        return found

    def _result(self, plan: Plan, order: OrderInfo | None, side: Side, qty: Decimal, reason: str,
                error: str, wait_s: float, coid: str) -> Result:  # fmt: skip
        now = self.clock.now()
        if order is None:
            status = ResultStatus.REJECTED if reason == EXCHANGE_REJECTED else (
                ResultStatus.UNKNOWN if reason else ResultStatus.FILLED)  # fmt: skip
            filled, avg, oid = Decimal(0), None, ""
        else:
            filled, avg, oid = order.filled_qty, order.avg_price, order.order_id
            if order.status is OrderStatus.FILLED:
                status = ResultStatus.FILLED
            elif filled > 0:
                status = ResultStatus.PARTIALLY_FILLED
            elif order.status in (OrderStatus.REJECTED, OrderStatus.EXPIRED, OrderStatus.CANCELED):
                status, reason = ResultStatus.REJECTED, EXCHANGE_REJECTED
            else:  # still NEW: never reported as filled
                status, reason = ResultStatus.UNKNOWN, EXCHANGE_UNKNOWN
        if not plan.steps or not any(s.type == "market_reduce_only" for s in plan.steps):
            status = ResultStatus.FILLED if not reason else status
        return Result(
            plan_id=plan.plan_id, symbol=plan.symbol,
            executed=status in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED) and filled > 0,
            status=status, reason=reason or "ok", order_id=oid, client_order_id=coid, side=side,
            requested_qty=qty, filled_qty=filled, avg_price=avg, reduce_only=True,
            error=error[:500], permit_wait_ms=_ms(wait_s),
            chain_latency_ms=_ms(max(0.0, now - plan.proposal_ts)), ts=now,
        )  # fmt: skip

    async def finish(self, plan: Plan, result: Result, *, exec_state: str | None,
                     context: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Result on the stream, exec record final, audit entry: one pipeline. A plan has
        exactly one result: a second writer (recovery racing a slow first one) stops here."""
        if not await self.r.hsetnx(self.k.exec_record(plan.plan_id), "result_ts",  # type: ignore[misc]
                                   f"{result.ts:.6f}"):  # fmt: skip
            log.warning("plan %s already has a result; not writing another", plan.plan_id)
            return
        pipe = self.r.pipeline(transaction=False)
        if exec_state is not None:
            pipe.hset(self.k.exec_record(plan.plan_id), mapping={
                "state": exec_state, "filled_qty": fmt_decimal(result.filled_qty),
                "order_id": result.order_id, "reason": result.reason,
                "updated_at": f"{time.time():.6f}"})  # fmt: skip
        pipe.xadd(self.k.result_stream, result.to_fields(), maxlen=RESULT_MAXLEN, approximate=True)
        pipe.xadd(self.k.decisions, audit_fields(
            plan_id=plan.plan_id, symbol=plan.symbol, layer=LAYER,
            decision="EXECUTED" if result.executed else result.status.value.upper(),
            reason=result.reason, context={"result": result.to_fields(), **(context or {})},
        ), maxlen=AUDIT_MAXLEN, approximate=True)  # fmt: skip
        await pipe.execute()
        EXEC_STATUS.labels(plan.symbol, result.status.value, result.reason).inc()
        if result.chain_latency_ms:
            CHAIN_LATENCY.observe(float(result.chain_latency_ms) / 1000)
        log_decision(log, layer=LAYER, plan_id=plan.plan_id, symbol=plan.symbol,
                     decision=result.status.value, reason=result.reason,
                     qty=fmt_decimal(result.filled_qty))  # fmt: skip

    async def _set_exec(self, plan_id: str, **fields: str) -> None:
        await self.r.hset(self.k.exec_record(plan_id),  # type: ignore[misc]
                          mapping={**fields, "updated_at": f"{time.time():.6f}"})  # fmt: skip

    # -- recovery ---------------------------------------------------------------------------
    async def recover(self, plan_id: str) -> None:
        """Resolve an exec record left ``submitted`` (or ``permitted``) by a crash: ask the
        exchange by client order id, then write the result. Never re-send."""
        h: dict[str, str] = await self.r.hgetall(self.k.exec_record(plan_id))  # type: ignore[misc]
        state, symbol = h.get("state"), h.get("symbol", "")
        if state == "permitted":
            # Consumed, but no order was sent (submitted is written before sending).
            await self._set_exec(plan_id, state="blocked", reason="recovered_unsent")
            log.warning("[RECOVER] plan=%s was consumed but never sent: blocked", plan_id)
            fake = _RecoveredPlan(plan_id, symbol)
            await self.finish(fake, Result(  # type: ignore[arg-type]
                plan_id=plan_id, symbol=symbol, executed=False, status=ResultStatus.BLOCKED,
                reason="recovered_unsent", ts=self.clock.now()), exec_state=None)  # fmt: skip
            return
        if state != "submitted":
            return
        coid = h.get("client_order_id") or client_order_id(plan_id)
        order = await self.lookup(symbol, coid, want_final=True)
        side: Side = "SELL" if h.get("side") == "SELL" else "BUY"
        qty = Decimal(h.get("qty") or "0")
        fake_plan = _RecoveredPlan(plan_id, symbol)
        result = self._result(
            fake_plan,
            order,
            side,
            qty,  # type: ignore[arg-type]
            "" if order else EXCHANGE_UNKNOWN,
            "" if order else "not found by client order id",
            0.0,
            coid,
        )
        state_after = {ResultStatus.FILLED: "filled", ResultStatus.PARTIALLY_FILLED: "filled",
                       ResultStatus.REJECTED: "rejected"}.get(result.status, "unknown")  # fmt: skip
        await self.finish(
            fake_plan,
            result,
            exec_state=state_after,  # type: ignore[arg-type]
            context={"recovered": True},
        )
        log.warning("[RECOVER] plan=%s resolved from the exchange: %s", plan_id, state_after)

    async def recover_all(self) -> int:
        """On start: resolve every exec record left mid-flight by a previous run."""
        n = 0
        async for key in self.r.scan_iter(match=self.k.exec_pattern, count=1000):
            state = await self.r.hget(key, "state")  # type: ignore[misc]
            if state in ("submitted", "permitted"):
                await self.recover(key[key.index("{") + 1 : key.index("}")])
                n += 1
        return n


class _RecoveredPlan:
    """The few plan fields recovery needs when the plan entry itself is gone."""

    def __init__(self, plan_id: str, symbol: str) -> None:
        self.plan_id, self.symbol = plan_id, symbol
        self.steps = [type("S", (), {"type": "market_reduce_only"})()]
        self.proposal_ts = time.time()


def _ms(seconds: float) -> Decimal:
    return Decimal(round(seconds * 1000, 3)).quantize(Decimal("0.001"))
