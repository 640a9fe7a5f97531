"""Start-up and periodic reconciliation of the exchange account with what the chain knows.

At the apply layer's start, every ``RECONCILE_S``, and whenever the exchange's user stream
comes back after a break:

* **Position mode** (one-way or hedge, ``position_mode()`` of the adapter): the first one
  seen is kept in ``quantum:apply:reconcile`` (``position_mode``); a different one later
  means the account changed under the chain while it was running: the apply layer sends no
  order any more (each plan is blocked ``position_mode_changed``, audited), the report keeps
  ``mode_changed`` (``one-way -> hedge``; a restarted process reads it and stays stopped),
  and ``permitchain status`` is unhealthy until an operator has checked the account and
  runs ``permitchain resume``, which clears it (the recorded mode is then the new one). The
  apply layer never writes the trading state itself: only the operator changes the kill
  switch.
* **Orders the chain does not know**: open orders on the exchange whose client order id has
  the chain's prefix (``pc-``) but that are neither a stop in the stop book nor the order
  of a plan still open (submitted/unknown): listed in the report (``unknown_orders``, JSON)
  and ``permitchain status`` is unhealthy, naming them. They are not cancelled: what they
  are is for an operator to decide.

A failed read leaves the last report as it was (its ``checked_at`` ages; ``status`` warns
when it is older than three intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

from permitchain.apply_layer.exec_store import ExecStore
from permitchain.apply_layer.resolver import plan_of
from permitchain.contract.errors import ExchangeError
from permitchain.contract.keys import Keys
from permitchain.contract.reasons import POSITION_MODE_CHANGED
from permitchain.exchange.base import Exchange
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.runtime.clock import Clock
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.executor")

OWN_PREFIX = "pc-"


@dataclass
class ReconcileReport:
    position_mode: str = ""
    mode_changed: str = ""  # "one-way -> hedge" when the mode changed while running
    unknown_orders: list[str] = field(default_factory=list)  # "SYMBOL coid STATUS"


class Reconciler:
    def __init__(
        self,
        r: AsyncRedis,
        keys: Keys,
        exchange: Exchange,
        store: ExecStore,
        clock: Clock,
        *,
        every_s: float = 60.0,
    ) -> None:
        self.redis, self.keys, self.exchange, self.store, self.clock = (
            r,
            keys,
            exchange,
            store,
            clock,
        )
        self.every_s = every_s
        self.due = asyncio.Event()  # set by request(): check now (a stream reconnection)
        #: why this apply layer sends no order ("" = it may); read by the executor
        self.stop_reason = ""

    def request(self) -> None:
        self.due.set()

    async def known_ids(self) -> set[str]:
        """Client order ids the chain knows: its booked stops and its open plans' orders."""
        ids: set[str] = set()
        async for key in self.redis.scan_iter(match=self.keys.stop_book_pattern, count=1000):
            ids.update(await self.redis.hkeys(key))
        for plan_id in await self.store.open_plans(float("inf"), limit=100_000):
            ids.update(
                {f"{OWN_PREFIX}{plan_id}", f"{OWN_PREFIX}{plan_id}-sx", f"{OWN_PREFIX}{plan_id}-sl"}
            )
        return ids

    async def check_once(self) -> ReconcileReport | None:
        """One reconciliation; None when the exchange or Redis could not be read."""
        try:
            mode_of = getattr(self.exchange, "position_mode", None)
            mode = str(await mode_of()) if mode_of is not None else ""
            orders = await self.exchange.open_orders()
            known = await self.known_ids()
            before = await self.redis.hgetall(self.keys.reconcile)
        except ExchangeError as e:
            log.warning("[RECONCILE] exchange not read: %s", e)
            return None
        except REDIS_FAULTS as e:
            log.warning("[RECONCILE] redis: %s", e)
            return None
        report = ReconcileReport(position_mode=mode, mode_changed=before.get("mode_changed", ""))
        recorded = before.get("position_mode", "")
        if mode and recorded and mode != recorded and not report.mode_changed:
            report.mode_changed = f"{recorded} -> {mode}"
            await self.halt(report.mode_changed)
        elif report.mode_changed:
            self.stop_reason = f"{POSITION_MODE_CHANGED}: {report.mode_changed}"
        else:
            self.stop_reason = ""
        report.unknown_orders = sorted(
            f"{o.symbol} {o.client_order_id} {o.status.value}"
            for o in orders
            if o.client_order_id.startswith(OWN_PREFIX)
            and o.client_order_id not in known
            and (plan_of(o.client_order_id) is not None or o.client_order_id.endswith("-sl"))
        )
        for line in report.unknown_orders:
            log.error("[RECONCILE] order on the exchange the chain does not know: %s", line)
        try:
            await self.redis.hset(
                self.keys.reconcile,
                mapping={
                    "position_mode": recorded if report.mode_changed else mode,
                    "observed_mode": mode,
                    "mode_changed": report.mode_changed,
                    "unknown_orders": json.dumps(report.unknown_orders),
                    "checked_at": f"{self.clock.now():.6f}",
                },
            )
        except REDIS_FAULTS as e:
            log.warning("[RECONCILE] report not written: %s", e)
        return report

    async def halt(self, change: str) -> None:
        """The position mode changed while running: this apply layer sends no order (every
        plan is blocked ``position_mode_changed``) until an operator resumes trading
        (``permitchain resume`` clears ``mode_changed``); audited."""
        self.stop_reason = f"{POSITION_MODE_CHANGED}: {change}"
        log.error("[RECONCILE] position mode changed (%s): no orders until resumed", change)
        fields = audit_fields(
            plan_id="",
            layer="executor",
            decision="TRADING_STOPPED",
            reason=POSITION_MODE_CHANGED,
            context={"change": change},
            ts=self.clock.now(),
        )
        try:
            await self.redis.xadd(
                self.keys.decisions, fields, maxlen=AUDIT_MAXLEN, approximate=True
            )
        except REDIS_FAULTS as e:
            log.error("[RECONCILE] audit entry not written: %s", e)

    async def run(self, stop: asyncio.Event) -> None:
        """At start, then every ``every_s`` and on ``request()``."""
        while not stop.is_set():
            self.due.clear()
            await self.check_once()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.due.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(
                    waiters, timeout=self.every_s, return_when=asyncio.FIRST_COMPLETED
                )
            for w in waiters:
                w.cancel()
