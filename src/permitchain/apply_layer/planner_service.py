"""Planner runner: proposal stream (and a periodic sweep of proposal hashes) → plan stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis

from permitchain.apply_layer.planner import (
    DUPLICATE_PLAN,
    PlannerPolicy,
    invalid_plan,
    make_plan,
)
from permitchain.errors import ContractError
from permitchain.keys import Keys
from permitchain.models import Plan, Proposal
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.scripts import Scripts
from permitchain.settings import SYMBOL_RE, Settings
from permitchain.store import REDIS_FAULTS

log = logging.getLogger("permitchain.planner")
LAYER = "planner"
PLANS = Counter(
    "apply_plans_total", "Plans decided by the planner", ["symbol", "decision", "reason"]
)
GROUP_PLANNER = "planner"


class Planner:
    def __init__(self, r: Redis, keys: Keys, settings: Settings, clock: Clock) -> None:
        self.r = r
        self.k = keys
        self.s = settings
        self.clock = clock
        self.scripts = Scripts(r)
        self.policy = PlannerPolicy(
            allow_list=settings.allow_list,
            kill_score_threshold=settings.kill_score_threshold,
            proposal_ttl_s=settings.proposal_ttl_s,
            plan_max_age_s=settings.plan_max_age_s,
            mode=settings.apply_mode.value,
        )

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """One proposal → one plan (or a recorded duplicate). Unreadable → dead letter."""
        now = self.clock.now()
        try:
            plan = make_plan(Proposal.from_fields(fields), self.policy, now)
        except ContractError as e:
            symbol = fields.get("symbol", "")
            if not SYMBOL_RE.match(symbol):
                raise
            plan = invalid_plan(symbol, fields, str(e), self.policy, now)
        await self.publish(plan, context={"proposal": fields})

    async def publish(self, plan: Plan, context: dict[str, Any] | None = None) -> bool:
        flat: list[str] = []
        for k, v in plan.to_fields().items():
            flat += [k, v]
        new_id = await self.scripts.publish_plan(
            keys=[self.k.dedupe(plan.plan_id), self.k.plan_stream],
            args=[self.s.dedupe_ttl_s, self.s.plan_stream_maxlen, *flat],
        )
        if new_id:
            decision, reason = plan.decision.value, plan.reason_codes[0]
        else:
            decision, reason = "DUPLICATE", DUPLICATE_PLAN
        await self.r.xadd(
            self.k.decisions,
            _audit(plan, decision, reason, {**(context or {}), "entry_id": new_id or ""}),
            maxlen=AUDIT_MAXLEN, approximate=True,
        )  # fmt: skip
        PLANS.labels(plan.symbol, decision, reason).inc()
        log_decision(log, layer=LAYER, plan_id=plan.plan_id, symbol=plan.symbol,
                     decision=decision, reason=reason, action=plan.action)  # fmt: skip
        return bool(new_id)

    async def sweep(self, stop: asyncio.Event) -> None:
        """Catch proposals whose stream event was missed: re-plan each live proposal hash.
        Dedupe makes this idempotent."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.s.planner_sweep_s)
            if stop.is_set():
                return
            try:
                async for key in self.r.scan_iter(match=self.k.proposal_pattern, count=500):
                    fields = await self.r.hgetall(key)  # type: ignore[misc]
                    if fields:
                        with contextlib.suppress(ContractError):
                            await self.handle("sweep", fields)
            except REDIS_FAULTS as e:
                log.warning("planner sweep: redis: %s", e)


def _audit(plan: Plan, decision: str, reason: str, context: dict[str, Any]) -> dict[str, str]:
    return audit_fields(
        plan_id=plan.plan_id, symbol=plan.symbol, layer=LAYER, decision=decision, reason=reason,
        context={"action": plan.action, "kill_score": str(plan.kill_score),
                 "proposal_id": plan.proposal_id, **context},
        ts=time.time(),
    )  # fmt: skip
