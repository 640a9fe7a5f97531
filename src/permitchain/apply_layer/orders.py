"""Orders: what a submitted plan needs, the order call, and the exchange's answer → result.

A :class:`Submission` is written into the exec record when the state moves to ``submitted``
(before the order is sent), so the resolver can finish the plan after a restart from the
record alone: no plan entry, no guesswork. :class:`OrderDesk` sends the reduce-only market
order once, looks it up by client order id after a timeout or error (never re-sends), places
or replaces the reduce-only stop of an ``UPDATE_SL`` step, and publishes the result.

A stop the mark has already passed (the exchange refuses it: ``StopWouldTrigger``, Binance
-2021/-4142) has its condition met now: the desk closes the stop's quantity at market instead
(reduce-only, client order id ``pc-<plan>-sx``), as the stop would have, and the result
carries that fill (reason ``stop_crossed_closed``); the previous stop stays in place until
then, so the position is never left without one. A close that leaves nothing of the
position cancels the symbol's resting stops (``stops.StopBook``). Each
order is logged twice, grep-able: ``[ORDER] SENT`` (plan, symbol, side, qty, client order id)
and ``[ORDER] OUTCOME`` (the same, with status, filled quantity, reason and latency).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import ConfigDict

from permitchain.apply_layer.exec_store import ExecStore
from permitchain.apply_layer.stops import StopBook
from permitchain.contract.errors import (
    ExchangeError,
    OrderOutcomeUnknown,
    OrderRejected,
    StopWouldTrigger,
)
from permitchain.contract.models import (
    Dec,
    DecOrZero,
    Flag,
    OptionalDec,
    Record,
    Result,
    ResultStatus,
    Timestamp,
    fmt_decimal,
)
from permitchain.contract.reasons import (
    EXCHANGE_REJECTED,
    EXCHANGE_UNKNOWN,
    STOP_CROSSED_CLOSED,
    STOP_PLACED,
)
from permitchain.exchange.base import Exchange, OrderInfo, OrderStatus, Side
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.clock import Clock

log = logging.getLogger("permitchain.executor")

LOOKUP_ATTEMPTS = 5
FINAL_ORDER = (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED)
STATE_OF = {
    ResultStatus.FILLED: "filled",
    ResultStatus.PARTIALLY_FILLED: "filled",
    ResultStatus.REJECTED: "rejected",
    ResultStatus.UNKNOWN: "unknown",
}


def client_order_id(plan_id: str, suffix: str = "") -> str:
    """Deterministic from the plan: the same plan can never make a second order."""
    return f"pc-{plan_id}{suffix}"


def latency_ms(proposal_ts: float, now: float) -> Decimal:
    """Chain latency: proposal made → result, whole milliseconds."""
    return Decimal(max(0, round((now - proposal_ts) * 1000)))


class Submission(Record):
    """One plan's order, as stored in its exec record at submit time."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # the exec record holds more
    has_schema: ClassVar[bool] = False

    plan_id: str
    symbol: str
    side: Side
    qty: Dec  # P3.3's safe_close_qty, always
    close: Flag  # a reduce-only market close (else the plan only moves the stop)
    position_amt: Dec  # |exchange position| P3.3 saw: what a stop covers after the close
    stop_price: OptionalDec = None
    proposal_ts: Timestamp
    permit_wait_ms: DecOrZero = Decimal(0)

    @property
    def client_order_id(self) -> str:
        return client_order_id(self.plan_id) if self.close else ""

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        return f"exec record {data.get('plan_id')}"

    def to_fields(self) -> dict[str, str]:
        return {
            "symbol": self.symbol,
            "side": self.side,
            "qty": fmt_decimal(self.qty),
            "close": "true" if self.close else "false",
            "client_order_id": self.client_order_id,
            "position_amt": fmt_decimal(self.position_amt),
            "stop_price": "" if self.stop_price is None else fmt_decimal(self.stop_price),
            "proposal_ts": f"{self.proposal_ts:.6f}",
            "permit_wait_ms": fmt_decimal(self.permit_wait_ms),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    status: ResultStatus
    reason: str
    final: bool


def judge(order: OrderInfo | None, error_reason: str, *, give_up: bool) -> Outcome:
    """The exchange's answer as a result status. An order still NEW (or partly filled and
    still open), or not found, is not final: the plan waits in state ``unknown`` for the
    resolver. Only when told to give up is it final ``unknown`` — never filled."""
    if error_reason == EXCHANGE_REJECTED:
        return Outcome(ResultStatus.REJECTED, EXCHANGE_REJECTED, True)
    if order is not None and order.status is OrderStatus.FILLED:
        return Outcome(ResultStatus.FILLED, "ok", True)
    if order is not None and order.status in FINAL_ORDER:
        if order.filled_qty > 0:
            return Outcome(ResultStatus.PARTIALLY_FILLED, "ok", True)
        return Outcome(ResultStatus.REJECTED, EXCHANGE_REJECTED, True)
    return Outcome(ResultStatus.UNKNOWN, EXCHANGE_UNKNOWN, give_up)


def _fills(order: OrderInfo | None, sub: Submission) -> bool:
    """Does this order's fill count in the plan's result? The close, or the market order
    that replaced a stop the mark had passed."""
    return order is not None and (sub.close or order.type == "MARKET")


def make_result(
    sub: Submission,
    order: OrderInfo | None,
    outcome: Outcome,
    error: str,
    now: float,
    extra: OrderInfo | None = None,
) -> Result:
    """The plan's result. ``extra``: the market order that closed the remainder after the
    close, in place of a stop the mark had passed (its fill is added)."""
    filled = order.filled_qty if order is not None and _fills(order, sub) else Decimal(0)
    avg = order.avg_price if order is not None and _fills(order, sub) else None
    if extra is not None and extra.filled_qty > 0:
        extra_avg = extra.avg_price or avg or Decimal(0)
        avg = ((avg or extra_avg) * filled + extra_avg * extra.filled_qty) / (
            filled + extra.filled_qty
        )
        filled += extra.filled_qty
    return Result(
        plan_id=sub.plan_id,
        symbol=sub.symbol,
        executed=outcome.status in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED)
        and filled > 0,
        status=outcome.status,
        reason=outcome.reason,
        order_id=order.order_id if order is not None else "",
        client_order_id=order.client_order_id if order is not None else sub.client_order_id,
        side=sub.side,
        requested_qty=sub.qty,
        filled_qty=filled,
        avg_price=avg,
        reduce_only=True,
        error=error[:500],
        permit_wait_ms=sub.permit_wait_ms,
        chain_latency_ms=latency_ms(sub.proposal_ts, now),
        ts=now,
    )


def log_order(
    event: str, sub: Submission, coid: str, qty: Decimal, level: int = logging.INFO, **extra: object
) -> None:
    """One grep-able line per order event: ``[ORDER] SENT`` as it goes to the exchange,
    ``[ORDER] OUTCOME`` once its outcome is known (the same fields as JSON in json mode)."""
    fields = {
        "plan": sub.plan_id,
        "symbol": sub.symbol,
        "side": sub.side,
        "qty": fmt_decimal(qty),
        "client_order_id": coid,
        **extra,
    }
    log.log(
        level,
        "[ORDER] %s %s",
        event,
        " ".join(f"{k}={v}" for k, v in fields.items()),
        extra={"fields": {"event": f"ORDER_{event}", **fields}},
    )


class OrderDesk:
    def __init__(
        self, exchange: Exchange, store: ExecStore, clock: Clock, book: StopBook | None = None
    ) -> None:
        self.exchange, self.store, self.clock = exchange, store, clock
        self.book = book
        #: client order id -> when this process sent it (monotonic), for the outcome's latency
        self.sent_at: dict[str, float] = {}

    def order_ms(self, coid: str) -> str:
        """Milliseconds from send to now, or ``-`` when another process sent it."""
        t = self.sent_at.pop(coid, None)
        return "-" if t is None else str(round((time.monotonic() - t) * 1000))

    async def send(self, sub: Submission) -> tuple[OrderInfo | None, str, str]:
        """Place the close once. Returns (order or None, error reason, error text)."""
        coid = sub.client_order_id
        log_order("SENT", sub, coid, sub.qty, type="market_reduce_only")
        self.sent_at[coid] = time.monotonic()
        try:
            order = await self.exchange.place_reduce_only_market(
                sub.symbol, sub.side, sub.qty, coid
            )
        except OrderRejected as e:
            return None, EXCHANGE_REJECTED, f"{e.code}: {e}"
        except (OrderOutcomeUnknown, ExchangeError) as e:
            log.warning("order %s outcome unknown (%s): looking it up by client order id", coid, e)
            return await self.lookup(sub.symbol, coid), "", str(e)
        if order.status not in FINAL_ORDER:
            order = await self.lookup(sub.symbol, coid) or order
        return order, "", ""

    async def lookup(
        self, symbol: str, coid: str, attempts: int = LOOKUP_ATTEMPTS
    ) -> OrderInfo | None:
        """Look the order up by client order id (never re-send); wait briefly for a final state."""
        backoff = Backoff(base_s=0.05, cap_s=0.5)
        found: OrderInfo | None = None
        for i in range(attempts):
            try:
                found = await self.exchange.fetch_order(symbol, coid) or found
            except ExchangeError as e:
                log.warning("lookup %s failed: %s", coid, e)
            if found is not None and found.status in FINAL_ORDER:
                return found
            if i + 1 < attempts:
                await asyncio.sleep(backoff.next_delay())
        return found

    async def conclude(
        self,
        sub: Submission,
        order: OrderInfo | None,
        error_reason: str,
        error: str,
        *,
        from_state: str,
        give_up: bool = False,
        context: dict[str, Any] | None = None,
    ) -> bool:
        """Judge the answer, place the stop when the plan has one, publish the plan's one
        result. An answer that is not final yet moves ``submitted → unknown`` (no result: the
        resolver writes it later). Returns False when another writer got there first."""
        if sub.close:
            outcome = judge(order, error_reason, give_up=give_up)
        else:
            order, outcome, error = await self.place_stop(sub, sub.qty)
        if not outcome.final:
            if from_state not in ("submitted", "claimed"):  # claimed: a gated plan's order
                return False  # already unknown; the resolver keeps looking
            moved, _ = await self.store.move(
                sub.plan_id,
                from_states=(from_state,),
                to="unknown",
                fields={"reason": EXCHANGE_UNKNOWN, "detail": error[:500]},
            )
            log.warning(
                "[EXEC] plan=%s order %s outcome unknown: the resolver looks it up",
                sub.plan_id,
                sub.client_order_id,
            )
            return moved
        if sub.close:
            sent = order.filled_qty if order is not None else Decimal(0)
            log_order(
                "OUTCOME",
                sub,
                sub.client_order_id,
                sub.qty,
                logging.INFO if outcome.status is ResultStatus.FILLED else logging.WARNING,
                status=outcome.status.value,
                filled_qty=fmt_decimal(sent),
                reason=outcome.reason,
                latency_ms=self.order_ms(sub.client_order_id),
                chain_latency_ms=latency_ms(sub.proposal_ts, self.clock.now()),
            )
        extra: OrderInfo | None = None
        filled = order.filled_qty if order is not None and _fills(order, sub) else Decimal(0)
        closed = outcome.status in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED)
        if sub.close and closed and sub.stop_price is not None and sub.position_amt > filled:
            sl, _sl, sl_error = await self.place_stop(sub, sub.position_amt - filled)
            error = error or sl_error
            if sl is not None and sl.type == "MARKET":
                extra = sl
                filled += sl.filled_qty
        if filled > 0 and filled >= sub.position_amt and self.book is not None:
            await self.book.cancel_all(
                sub.symbol, self.exchange, f"plan {sub.plan_id} closed it all"
            )
        result = make_result(sub, order, outcome, error, self.clock.now(), extra)
        # A final answer may also close a plan the resolver meanwhile marked unknown.
        return await self.store.publish(
            result,
            from_states=(from_state, "unknown"),
            to=STATE_OF[outcome.status],
            context={"client_order_id": result.client_order_id, **(context or {})},
        )

    async def place_stop(
        self, sub: Submission, qty: Decimal
    ) -> tuple[OrderInfo | None, Outcome, str]:
        """Place (or replace: same symbol, new id) the reduce-only stop-market order."""
        if sub.stop_price is None or qty <= 0:
            return None, Outcome(ResultStatus.REJECTED, EXCHANGE_REJECTED, True), "no stop"
        coid, t0 = client_order_id(sub.plan_id, "-sl"), time.monotonic()
        stop = fmt_decimal(sub.stop_price)
        log_order("SENT", sub, coid, qty, type="stop_market_reduce_only", stop=stop)
        try:
            o = await self.exchange.place_stop_market(
                sub.symbol, sub.side, sub.stop_price, qty, coid
            )
        except StopWouldTrigger as e:
            log_order(
                "OUTCOME",
                sub,
                coid,
                qty,
                logging.WARNING,
                status="would_trigger",
                stop=stop,
                latency_ms=round((time.monotonic() - t0) * 1000),
            )
            return await self.close_crossed(sub, qty, e)
        except ExchangeError as e:
            log_order(
                "OUTCOME",
                sub,
                coid,
                qty,
                logging.ERROR,
                status="rejected",
                stop=stop,
                reason=EXCHANGE_REJECTED,
                latency_ms=round((time.monotonic() - t0) * 1000),
                error=str(e)[:200],
            )
            return None, Outcome(ResultStatus.REJECTED, EXCHANGE_REJECTED, True), f"stop: {e}"
        log_order(
            "OUTCOME",
            sub,
            coid,
            qty,
            status="placed",
            stop=stop,
            order_id=o.order_id,
            latency_ms=round((time.monotonic() - t0) * 1000),
        )
        if self.book is not None:
            await self.book.placed(sub.symbol, sub.plan_id, o)
        return o, Outcome(ResultStatus.FILLED, STOP_PLACED, True), ""

    async def close_crossed(
        self, sub: Submission, qty: Decimal, why: StopWouldTrigger
    ) -> tuple[OrderInfo | None, Outcome, str]:
        """The stop's trigger is already passed: close its quantity at market now, as the
        stop would have (the previous stop, if any, stays until this is done)."""
        coid, t0 = client_order_id(sub.plan_id, "-sx"), time.monotonic()
        passed = f"stop {fmt_decimal(sub.stop_price or Decimal(0))} already passed ({why.code})"
        log_order("SENT", sub, coid, qty, logging.WARNING, type="market_reduce_only", why=passed)
        try:
            order: OrderInfo | None = await self.exchange.place_reduce_only_market(
                sub.symbol, sub.side, qty, coid
            )
        except OrderRejected as e:
            log_order(
                "OUTCOME",
                sub,
                coid,
                qty,
                logging.ERROR,
                status="rejected",
                reason=EXCHANGE_REJECTED,
                error=f"{e.code}: {str(e)[:200]}",
            )
            return (
                None,
                Outcome(ResultStatus.REJECTED, EXCHANGE_REJECTED, True),
                (f"stop passed ({why.code}); market close refused: {e.code}: {e}"),
            )
        except ExchangeError as e:
            log.warning("order %s outcome unknown (%s): looking it up", coid, e)
            order = await self.lookup(sub.symbol, coid)
        if order is not None and order.status not in FINAL_ORDER:
            order = await self.lookup(sub.symbol, coid) or order
        outcome = judge(order, "", give_up=False)
        if outcome.status in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED):
            outcome = Outcome(outcome.status, STOP_CROSSED_CLOSED, True)
        log_order(
            "OUTCOME",
            sub,
            coid,
            qty,
            status=outcome.status.value,
            filled_qty=fmt_decimal(order.filled_qty if order else Decimal(0)),
            reason=outcome.reason,
            latency_ms=round((time.monotonic() - t0) * 1000),
        )
        return order, outcome, f"stop passed ({why.code}): closed at market"
