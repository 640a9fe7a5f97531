"""The resolver: finishes plans whose order outcome is open, from the exchange, never by
re-sending.

An exec record in ``submitted`` (a crash between the order and its result, or a slow order
still in flight elsewhere) or ``unknown`` (the order was NEW, or a lookup found nothing yet)
is listed in the open index. The resolver looks each one up by client order id and writes
the plan's one result when the exchange has a final answer (the state move and the result
are one atomic step, so it can race the live path or another resolver safely). Without one,
the result is a final ``unknown`` (never filled; P3.3's quantity check stops the symbol if
the order shows up later, until someone reconciles): at once when the order is not found and
the process that sent it is dead (same host, its pid gone: a restart), after
``not_found_s`` when it is not found, after ``give_up_s`` when it stays open. On start,
every open plan is resolved at once (``recover_all``); afterwards a periodic pass takes those
older than ``grace_s``.

Plans of the gate for external executors (``granted``, ``claimed``) are in the open index
too: an expired grant ends ``blocked``, an unreported claim is resolved as an order that was
submitted, by its client order id (``gate``).
With pushed updates (``run_pushed``: the exchange's user stream, ``exchange.stream``) a final
order update for one of our plan orders (client order id ``pc-<plan>``, or ``pc-<plan>-sx``)
resolves that plan at once, by the same look-up; the periodic pass stays the fallback.

On a Redis Cluster the open index also lists plans whose move left an ``outbox`` (a result
and audit entry not yet on their streams: the process died between the record's move and
those writes, see ``exec_store``); the resolver publishes it once it is ``grace_s`` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from permitchain.apply_layer import gate
from permitchain.apply_layer.exec_store import FINAL_GUARD, ExecStore
from permitchain.apply_layer.orders import OrderDesk, Submission
from permitchain.contract.errors import ContractError, ExchangeError
from permitchain.exchange.base import Exchange, OrderStatus
from permitchain.exchange.stream import UserStream
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.clock import Clock
from permitchain.store import REDIS_FAULTS
from permitchain.store.steps import OUTBOX

log = logging.getLogger("permitchain.executor")
OPEN_STATES = ("submitted", "unknown", gate.GRANTED, gate.CLAIMED)
FINAL = (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


def plan_of(client_order_id: str) -> str | None:
    """The plan a client order id belongs to (``pc-<plan>`` or ``pc-<plan>-sx``)."""
    if not client_order_id.startswith("pc-"):
        return None
    rest = client_order_id[3:]
    if rest.endswith("-sx"):
        rest = rest[:-3]
    return rest if rest and "-" not in rest else None


def sender_id() -> str:
    """Who sends an order: written into the exec record with the submission."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sender_dead(sender: str) -> bool:
    """True when the process that sent the order was on this host and is gone (a restart)."""
    host, _, pid = sender.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Resolver:
    def __init__(
        self,
        store: ExecStore,
        desk: OrderDesk,
        exchange: Exchange,
        clock: Clock,
        *,
        grace_s: float = 5.0,
        not_found_s: float = 10.0,
        give_up_s: float = 120.0,
        every_s: float = 2.0,
        report_s: float = 30.0,
    ) -> None:
        self.store, self.desk, self.exchange, self.clock = store, desk, exchange, clock
        self.grace_s = grace_s  # leave a young submit to the live path that sent it
        self.not_found_s = not_found_s  # beyond any receive window: a request cannot land now
        self.give_up_s = give_up_s  # no final answer this long after submit: final unknown
        self.every_s = every_s
        self.report_s = report_s  # a claimed gated plan's report window (GATE_REPORT_S)

    async def resolve(self, plan_id: str) -> str:
        """Look the plan's order up and write its final result if there is one now.
        Returns the exec state after."""
        h = await self.store.get(plan_id)
        if OUTBOX in h:  # Redis Cluster only: a move whose result a crash left unpublished
            if not await self.store.flush_outbox(plan_id, h, self.grace_s):
                return h.get("state", "none")  # young: the live path is publishing it
            log.warning("[RECOVER] plan=%s published the result its move left", plan_id)
            h = await self.store.get(plan_id)
        state = h.get("state", "none")
        if state not in OPEN_STATES or FINAL_GUARD in h:  # decided: nothing to look up
            await self.store.forget(plan_id)
            return state
        if state in (gate.GRANTED, gate.CLAIMED):
            now = self.clock.now()
            if not gate.due(h, now, self.report_s, sender_gone=sender_dead(h.get("sender", ""))):
                return state  # the bot's time to claim or report
            if state == gate.GRANTED:
                await gate.expire_grant(self.store, plan_id, h, now)
                return (await self.store.get(plan_id)).get("state", "none")
        try:
            sub = Submission.from_fields(h, plan_id=plan_id)
        except ContractError as e:
            log.error("[RECOVER] plan=%s unreadable exec record: %s", plan_id, e)
            return state
        order = None
        if sub.close:
            try:
                order = await self.exchange.fetch_order(sub.symbol, sub.client_order_id)
            except ExchangeError as e:
                log.warning("[RECOVER] plan=%s lookup failed: %s", plan_id, e)
                return state
        age = self.clock.now() - float(h.get("submitted_at") or 0)
        missing = order is None and (age >= self.not_found_s or sender_dead(h.get("sender", "")))
        give_up = age >= self.give_up_s or missing
        error = ""
        if give_up:
            error = f"no final answer for {sub.client_order_id} after {age:.1f}s" + (
                " (not found; its sender is gone)" if missing else ""
            )
        moved = await self.desk.conclude(
            sub, order, "", error, from_state=state, give_up=give_up, context={"recovered": True}
        )
        after = (await self.store.get(plan_id)).get("state", "none") if moved else state
        if moved:
            log.warning("[RECOVER] plan=%s looked up by client order id: state %s", plan_id, after)
        return after

    async def resolve_due(self, submitted_before: float) -> int:
        n = 0
        for plan_id in await self.store.open_plans(submitted_before):
            await self.resolve(plan_id)
            n += 1
        return n

    async def recover_all(self) -> int:
        """On start: resolve every plan a previous run left with an order out."""
        return await self.resolve_due(float("inf"))

    async def run_pushed(
        self,
        stop: asyncio.Event,
        stream: UserStream,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        """Resolve a plan as soon as the exchange pushes its order's final state.
        ``on_reconnect``: called when the stream answers again after a break."""
        backoff = Backoff(base_s=0.2, cap_s=5.0)
        broken = False
        while not stop.is_set():
            try:
                orders = await stream.orders()
                backoff.reset()
                if broken and on_reconnect is not None:
                    on_reconnect()
                broken = False
            except ExchangeError as e:
                broken = True
                delay = backoff.next_delay()
                log.warning("resolver: user stream down (%s); retrying in %.1fs", e, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            for o in orders:
                plan_id = plan_of(o.client_order_id)
                if plan_id is None or o.status not in FINAL:
                    continue
                try:
                    state = (await self.store.get(plan_id)).get("state", "none")
                    if state in OPEN_STATES:
                        after = await self.resolve(plan_id)
                        log.info(
                            "[RECOVER] plan=%s pushed %s %s: state %s",
                            plan_id,
                            o.client_order_id,
                            o.status.value,
                            after,
                        )
                except REDIS_FAULTS as e:
                    log.warning("resolver: redis: %s", e)

    async def run(self, stop: asyncio.Event) -> None:
        """Periodic pass over open plans older than ``grace_s``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
            if stop.is_set():
                return
            try:
                await self.resolve_due(self.clock.now() - self.grace_s)
            except REDIS_FAULTS as e:
                log.warning("resolver: redis: %s", e)
