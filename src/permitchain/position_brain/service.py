"""Position brain runner: snapshot poller, ledger consumer, and the P3.3 permit issuer.

* Poller: every ``POLL_INTERVAL_S`` one call for every position (never one symbol after
  another), snapshots written in one pipeline. A failed fetch writes nothing: the old
  snapshots go stale and P3.3 denies until the exchange answers again.
* Ledger: consumer group ``p33-ledger`` on the result stream; each result applied once.
* Permits: consumer group ``p33`` on the plan stream; each plan is judged as it arrives,
  from the current snapshot, by the six checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from redis.asyncio import Redis

from permitchain.errors import ExchangeError
from permitchain.exchange.base import Exchange, SymbolFilters
from permitchain.keys import GROUP_P33, GROUP_P33_LEDGER, Keys
from permitchain.models import P33Allow, P33Deny, Plan, Result, fmt_decimal
from permitchain.position_brain.checks import (
    COOLDOWN_IN_FLIGHT,
    CheckConfig,
    P33Decision,
    evaluate,
)
from permitchain.position_brain.state import (
    LAYER,
    SNAPSHOT_TTL_S,
    apply_result,
    init_ledger_if_missing,
    parse_ledger,
    parse_snapshot,
    snapshot_fields,
)
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.runtime.permits import write_permit
from permitchain.runtime.service import Consumer
from permitchain.settings import Settings
from permitchain.signing import sign
from permitchain.store import REDIS_FAULTS

log = logging.getLogger("permitchain.p33")

SNAPSHOTS = Counter("p33_snapshot_total", "Snapshot writes per symbol", ["symbol", "status"])
PERMITS = Counter("p33_permit_total", "P3.3 permits", ["symbol", "decision", "reason"])
POSITION_AMT = Gauge("p33_position_amt", "Exchange position (signed)", ["symbol"])
LEDGER_AMT = Gauge("p33_ledger_amt", "Ledger position (signed)", ["symbol"])
FILTER_REFRESH_S = 300.0
LEDGER_SCAN_S = 30.0


class _SnapshotAge(Collector):
    """``p33_snapshot_age_sec{symbol}`` computed at scrape time from the last good poll."""

    def __init__(self) -> None:
        self.last_ok: dict[str, float] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("p33_snapshot_age_sec", "Age of the last good snapshot",
                              labels=["symbol"])  # fmt: skip
        now = time.time()
        for sym, ts in list(self.last_ok.items()):
            g.add_metric([sym], now - ts)
        yield g


SNAPSHOT_AGE = _SnapshotAge()
REGISTRY.register(SNAPSHOT_AGE)


class PositionBrain:
    def __init__(
        self, r: Redis, keys: Keys, settings: Settings, clock: Clock, exchange: Exchange
    ) -> None:
        self.r, self.k, self.s, self.clock, self.ex = r, keys, settings, clock, exchange
        self.cfg = CheckConfig(
            stale_threshold_s=settings.stale_threshold_s,
            position_tolerance=settings.position_tolerance,
            qty_tolerance_pct=settings.qty_tolerance_pct,
            cooldown_s=settings.cooldown_s,
            plan_max_age_s=settings.plan_max_age_s,
        )
        self.filters: dict[str, SymbolFilters] = {}
        self._filters_at = 0.0
        self._ledger_symbols: set[str] = set()
        self._ledger_scan_at = 0.0
        self.poll_now = asyncio.Event()

    def consumers(self) -> list[Consumer]:
        return [
            Consumer(self.k.plan_stream, GROUP_P33, self.handle_plan),
            Consumer(self.k.result_stream, GROUP_P33_LEDGER, self.handle_result),
        ]

    # -- poller ------------------------------------------------------------------------------
    async def watched(self) -> set[str]:
        if time.monotonic() - self._ledger_scan_at > LEDGER_SCAN_S:
            prefix = self.k.ledger("")
            self._ledger_symbols = {
                key[len(prefix):] async for key in self.r.scan_iter(match=self.k.ledger_pattern,
                                                                   count=1000)
            }  # fmt: skip
            self._ledger_scan_at = time.monotonic()
        return set(self.s.allow_list) | self._ledger_symbols

    async def poll_once(self) -> int:
        """One poll. Returns the number of snapshots written (0 when the exchange failed)."""
        watched = await self.watched()
        try:
            if time.monotonic() - self._filters_at > FILTER_REFRESH_S or not self.filters:
                self.filters = await self.ex.filters(None)
                self._filters_at = time.monotonic()
            positions = await self.ex.fetch_positions(None)
        except ExchangeError as e:
            for sym in watched:
                SNAPSHOTS.labels(sym, "error").inc()
            log.warning("poller: exchange read failed, snapshots left to go stale: %s", e)
            return 0
        now = self.clock.now()
        pipe = self.r.pipeline(transaction=False)
        written = []
        for sym in sorted(watched | positions.keys()):
            pos, f = positions.get(sym), self.filters.get(sym)
            if pos is None or f is None:
                SNAPSHOTS.labels(sym, "unknown_symbol").inc()
                continue
            key = self.k.snapshot(sym)
            pipe.hset(key, mapping=snapshot_fields(pos, f, now, self.ex.name))
            pipe.expire(key, SNAPSHOT_TTL_S)
            pipe.exists(self.k.ledger(sym))
            written.append((sym, pos.amt))
        results = await pipe.execute()
        for i, (sym, amt) in enumerate(written):
            SNAPSHOTS.labels(sym, "ok").inc()
            SNAPSHOT_AGE.last_ok[sym] = now
            POSITION_AMT.labels(sym).set(float(amt))
            if not results[3 * i + 2]:
                await init_ledger_if_missing(self.r, self.k, sym, amt)
                self._ledger_symbols.add(sym)
        return len(written)

    async def poller(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.poll_once()
            except REDIS_FAULTS as e:
                log.warning("poller: redis: %s", e)
            self.poll_now.clear()
            delay = max(0.0, self.s.poll_interval_s - (time.monotonic() - started))
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.poll_now.wait()),
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    # -- ledger ------------------------------------------------------------------------------
    async def handle_result(self, entry_id: str, fields: dict[str, str]) -> None:
        result = Result.from_fields(fields)
        change = await apply_result(self.r, self.k, result, entry_id)
        if change.applied and change.after is not None:
            LEDGER_AMT.labels(result.symbol).set(float(change.after))
        if change.applied and result.signed_delta != 0:
            log.info("[LEDGER] symbol=%s plan=%s %s -> %s (result %s)", result.symbol,
                     result.plan_id, change.before, change.after, entry_id)  # fmt: skip
            self.poll_now.set()  # refresh the snapshot after a fill instead of waiting

    # -- permits -----------------------------------------------------------------------------
    async def handle_plan(self, entry_id: str, fields: dict[str, str]) -> None:
        plan = Plan.from_fields(fields)
        if not plan.is_execute:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k.snapshot(plan.symbol))
        pipe.hgetall(self.k.ledger(plan.symbol))
        snap_h, ledger_h = await pipe.execute()
        snapshot = parse_snapshot(snap_h)
        ledger = parse_ledger(ledger_h)
        if ledger is None and snapshot is not None:
            await init_ledger_if_missing(self.r, self.k, plan.symbol, snapshot.position_amt)
            ledger = parse_ledger(await self.r.hgetall(self.k.ledger(plan.symbol)))  # type: ignore[misc]
        now = self.clock.now()
        d = evaluate(action=plan.action, plan_created_at=plan.created_at, snapshot=snapshot,
                     ledger=ledger, cfg=self.cfg, now=now)  # fmt: skip
        if d.allow and self.cfg.cooldown_s > 0:
            claimed = await self.r.set(self.k.inflight(plan.symbol), plan.plan_id, nx=True,
                                       px=int(self.cfg.cooldown_s * 1000))  # fmt: skip
            if not claimed:
                holder = await self.r.get(self.k.inflight(plan.symbol))
                d = P33Decision(False, COOLDOWN_IN_FLIGHT, {**d.context, "in_flight_plan": holder},
                                snapshot_age_s=d.snapshot_age_s)  # fmt: skip
        await self.issue(plan, d, snapshot_amt=snapshot.position_amt if snapshot else None,
                         ledger_amt=ledger.amt if ledger else None, now=now)  # fmt: skip

    async def issue(self, plan: Plan, d: P33Decision, *, snapshot_amt: object,
                    ledger_amt: object, now: float) -> None:  # fmt: skip
        exp = now + self.s.permit_ttl_s
        permit: P33Allow | P33Deny
        if d.allow:
            assert d.safe_close_qty is not None and d.side in ("LONG", "SHORT")
            permit = P33Allow(
                plan_id=plan.plan_id, symbol=plan.symbol, safe_close_qty=d.safe_close_qty,
                side=d.side, exchange_position_amt=snapshot_amt, ledger_position_amt=ledger_amt,
                snapshot_age_sec=d.snapshot_age_s or 0, created_at=now, expires_at=exp,
            )  # fmt: skip
        else:
            permit = P33Deny(plan_id=plan.plan_id, symbol=plan.symbol, reason=d.reason,
                             context=d.context, created_at=now, expires_at=exp)  # fmt: skip
        if self.s.permit_key_p33 is not None:
            key = self.s.permit_key_p33.get_secret_value()
            permit = permit.model_copy(update={"sig": sign(permit.body(), key)})
        decision = "ALLOW" if d.allow else "DENY"
        await write_permit(
            self.r, self.k, key=self.k.permit_p33(plan.plan_id), permit_json=permit.to_json(),
            ttl_s=self.s.permit_ttl_s, plan_id=plan.plan_id, symbol=plan.symbol, layer=LAYER,
            decision=decision, reason=d.reason, context={"permit": permit.body()}, ts=now,
        )  # fmt: skip
        PERMITS.labels(plan.symbol, decision, d.reason).inc()
        extra = {"safe_qty": fmt_decimal(d.safe_close_qty)} if d.safe_close_qty else {}
        log_decision(
            log,
            layer=LAYER,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            decision=decision,
            reason=d.reason,
            **extra,
            **{k: v for k, v in d.context.items() if k in ("diff", "tolerance")},
        )
