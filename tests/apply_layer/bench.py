"""An in-process executor on a real server with the simulated exchange, and permit writers.

``Bench`` runs the executor's permit-event reader for the duration of an ``async with``;
tests write permits the way the gatekeepers do (``write_permit``: SET NX EX + wake-up event)
and drive ``Executor.handle`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal
from typing import Any, cast

from redis.asyncio import Redis

from permitchain.apply_layer.executor import Executor
from permitchain.apply_layer.orders import client_order_id
from permitchain.apply_layer.planner import PlannerPolicy, make_plan
from permitchain.contract.keys import Keys
from permitchain.contract.models import GovernorPermit, P33Allow, P33Deny, Plan, Proposal
from permitchain.contract.settings import Settings
from permitchain.contract.signing import sign
from permitchain.exchange.sim import SimExchange
from permitchain.runtime.clock import Clock, SystemClock
from permitchain.runtime.permits import write_permit

SYM = "BTCUSDT"
POSITION = Decimal("1")


def plan_for(
    tranche: int,
    action: str = "PARTIAL_50",
    *,
    symbol: str = SYM,
    new_sl: str | None = None,
    now: float | None = None,
) -> Plan:
    """An EXECUTE plan as the planner makes it (unique per tranche)."""
    t = time.time() if now is None else now
    policy = PlannerPolicy(
        allow_list=frozenset({symbol}),
        kill_score_threshold=Decimal("0.5"),
        proposal_ttl_s=60,
        plan_max_age_s=30,
        mode="testnet",
    )
    p = Proposal(
        proposal_id=f"p{tranche}",
        symbol=symbol,
        action=action,
        kill_score=Decimal("0.7"),
        new_sl=Decimal(new_sl) if new_sl else None,
        position_epoch=1,
        tranche=tranche,
        ts_epoch=t,
    )
    plan = make_plan(p, policy, t)
    assert plan.is_execute, plan
    return plan


def gov_json(
    plan: Plan, *, granted: bool = True, key: str | None = None, ttl_s: float = 60, **over: Any
) -> str:
    now = time.time()
    fields: dict[str, Any] = dict(
        plan_id=plan.plan_id,
        symbol=plan.symbol,
        decision="GRANT" if granted else "DENY",
        granted=granted,
        reason="testnet_auto_approve" if granted else "trading_halted",
        mode="testnet",
        created_at=now,
        expires_at=now + ttl_s,
    )
    permit = GovernorPermit(**{**fields, **over})
    if key is not None:
        permit = permit.model_copy(update={"sig": sign(permit.body(), key)})
    return permit.to_json()


def p33_json(
    plan: Plan,
    *,
    allow: bool = True,
    qty: str = "0.01",
    key: str | None = None,
    ttl_s: float = 60,
    **over: Any,
) -> str:
    now = time.time()
    base: dict[str, Any] = dict(
        plan_id=plan.plan_id, symbol=plan.symbol, created_at=now, expires_at=now + ttl_s
    )
    permit: P33Allow | P33Deny
    if allow:
        permit = P33Allow(
            **{
                **base,
                "safe_close_qty": Decimal(qty),
                "side": "LONG",
                "exchange_position_amt": POSITION,
                "ledger_position_amt": POSITION,
                "snapshot_age_sec": Decimal("0.5"),
                **over,
            }
        )
    else:
        permit = P33Deny(**{**base, "reason": "reconcile_required_qty_mismatch", **over})
    if key is not None:
        permit = permit.model_copy(update={"sig": sign(permit.body(), key)})
    return permit.to_json()


class WatchedWaiters(dict[str, asyncio.Event]):
    """The executor's waiter map, telling the test when a plan starts waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def setdefault(self, key: str, default: asyncio.Event) -> asyncio.Event:  # type: ignore[override]
        self.changed.set()
        return super().setdefault(key, default)


class Bench:
    def __init__(
        self,
        r: Redis,
        keys: Keys,
        settings: Settings,
        clock: Clock | None = None,
        sim: SimExchange | None = None,
    ) -> None:
        self.r, self.k = r, keys
        self.sim = sim or SimExchange(r, keys)
        self.ex = Executor(r, keys, settings, clock or SystemClock(), self.sim)
        self.ex.waiters = self.waiters = WatchedWaiters()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Bench:
        await self.sim.set_position(SYM, POSITION, Decimal(100))
        await self.sim.set_price(SYM, Decimal(107))
        self._task = asyncio.create_task(self.ex.permit_events(self._stop))
        await self.ex.events_ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def handle(self, plan: Plan) -> None:
        await self.ex.handle("0-1", plan.to_fields())

    async def permit(self, plan: Plan, layer: str, raw: str) -> None:
        key = (
            self.k.permit_governor(plan.plan_id)
            if layer == "governor"
            else (self.k.permit_p33(plan.plan_id))
        )
        await write_permit(
            self.r,
            self.k,
            key=key,
            permit_json=raw,
            ttl_s=60,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            layer=layer,
            decision="TEST",
            reason="test",
            context={},
            ts=time.time(),
        )

    async def gov(self, plan: Plan, **kw: Any) -> None:
        await self.permit(plan, "governor", gov_json(plan, **kw))

    async def p33(self, plan: Plan, **kw: Any) -> None:
        await self.permit(plan, "position-brain", p33_json(plan, **kw))

    async def until_waiting(self, *plan_ids: str) -> None:
        """Until the executor waits on each plan (its waiter is registered): no fixed sleeps."""
        while True:
            self.ex.waiters.changed.clear()
            if all(p in self.ex.waiters for p in plan_ids):
                return
            await self.ex.waiters.changed.wait()

    async def run(self, plan: Plan, **p33: Any) -> None:
        """Both permits allow (P3.3's keyword arguments given), then the executor runs."""
        await self.gov(plan)
        await self.p33(plan, **p33)
        await self.handle(plan)

    async def results(self, plan_id: str) -> list[dict[str, str]]:
        entries = cast(
            "list[tuple[str, dict[str, str]]]", await self.r.xrange(self.k.result_stream)
        )
        return [f for _i, f in entries if f["plan_id"] == plan_id]

    async def result(self, plan_id: str) -> dict[str, str]:
        (res,) = await self.results(plan_id)
        return res

    async def fills(self, plan_id: str | None = None) -> list[dict[str, str]]:
        entries = cast("list[tuple[str, dict[str, str]]]", await self.r.xrange(self.k.sim_fills))
        coid = client_order_id(plan_id) if plan_id else None
        return [f for _i, f in entries if coid is None or f["client_order_id"] == coid]

    async def exec_record(self, plan_id: str) -> dict[str, str]:
        return await self.ex.store.get(plan_id)

    async def order(self, plan_id: str, suffix: str = "") -> dict[str, str]:
        key = self.k.sim_order(SYM, client_order_id(plan_id, suffix))
        return cast("dict[str, str]", await self.r.hgetall(key))  # type: ignore[misc]


def audit_context(entry: dict[str, str]) -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads(entry.get("context") or "{}"))
