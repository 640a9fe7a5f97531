"""Planner runner: proposal stream (and a periodic sweep of proposal hashes) → plan stream.

Event-driven: each entry of ``quantum:stream:harvest.proposal`` becomes one plan at once. The
sweep catches a proposal whose event was lost: every ``PLANNER_SWEEP_S`` it reads the proposal
hashes of the allowlisted symbols (one pipelined round trip, no SCAN of the keyspace) and
publishes each live proposal's plan through the same atomic dedupe + XADD script; a plan
already published (the usual case) is silent there, so a sweep that finds nothing new writes
nothing.

The dedupe key, the XADD and the audit entry are one atomic step of the store
(:meth:`AtomicSteps.publish_plan`, ``store/steps.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import redis.exceptions

from permitchain.apply_layer.planner import PlannerPolicy, plan_from_fields
from permitchain.contract.errors import ContractError, WrongTypeError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan
from permitchain.contract.reasons import DUPLICATE_PLAN, PROPOSAL_EXPIRED, WRONG_KEY_TYPE
from permitchain.contract.settings import Settings
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.runtime.metrics import LabelledCounter
from permitchain.runtime.service import WRONG_TYPES
from permitchain.store import REDIS_FAULTS, AsyncRedis, is_wrong_type, wrong_type
from permitchain.store.steps import PlanAudit, steps_for

log = logging.getLogger("permitchain.planner")
LAYER = "planner"
PLANS = LabelledCounter(
    "apply_plans_total", "Plans decided by the planner", ["symbol", "decision", "reason"]
)
GROUP_PLANNER = "planner"


async def publish_plan(
    r: AsyncRedis,
    keys: Keys,
    plan_id: str,
    ttl_s: int,
    maxlen: int,
    flat: list[str],
    audit: PlanAudit | None = None,
) -> str | None:
    """Publish a plan once: its dedupe key and the XADD (and, with ``audit``, its audit
    entry: :func:`plan_audit` makes it) in one atomic step. Returns the entry id, or None
    when the plan was published already."""
    return await steps_for(r).publish_plan(
        keys.dedupe(plan_id),
        keys.plan_stream_for(flat[flat[::2].index("symbol") * 2 + 1]),  # its shard
        flat,
        ttl_s=ttl_s,
        maxlen=maxlen,
        audit=audit,
    )


class Planner:
    def __init__(self, r: AsyncRedis, keys: Keys, settings: Settings, clock: Clock) -> None:
        self.redis = r
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.steps = steps_for(r)
        self.policy = PlannerPolicy(
            allow_list=settings.allow_list,
            kill_score_threshold=settings.kill_score_threshold,
            proposal_ttl_s=settings.proposal_ttl_s,
            plan_max_age_s=settings.plan_max_age_s,
            mode=settings.apply_mode.value,
        )

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """One proposal → one plan (or a recorded duplicate). Unreadable → dead letter."""
        plan, error = plan_from_fields(fields, self.policy, self.clock.now())
        ctx: dict[str, Any] = {"proposal": fields, **({"error": error} if error else {})}
        await self.publish(plan, context=ctx)

    async def publish(
        self, plan: Plan, context: dict[str, Any] | None = None, *, audit_duplicate: bool = True
    ) -> bool:
        flat: list[str] = []
        for k, v in plan.to_fields().items():
            flat += [k, v]
        ctx = _context(plan, context)
        # the audit entry written with the plan, but when the context names an entry id
        audit = (
            None
            if "entry_id" in ctx
            else plan_audit(plan, ctx, self.keys.decisions, audit_duplicate=audit_duplicate)
        )
        new_id = await self.steps.publish_plan(
            self.keys.dedupe(plan.plan_id),
            self.keys.plan_stream_for(plan.symbol),
            flat,
            ttl_s=self.settings.dedupe_ttl_s,
            maxlen=self.settings.plan_stream_maxlen,
            audit=audit,
        )
        if new_id:
            decision, reason = plan.decision.value, plan.reason_codes[0]
        elif audit_duplicate:
            decision, reason = "DUPLICATE", DUPLICATE_PLAN
        else:
            return False
        if audit is None:
            fields = _audit(plan, decision, reason, {**ctx, "entry_id": new_id or ""})
            await self.redis.xadd(
                self.keys.decisions,
                cast("dict[Any, Any]", fields),
                maxlen=AUDIT_MAXLEN,
                approximate=True,
            )
        PLANS.inc(plan.symbol, decision, reason)
        log_decision(
            log,
            layer=LAYER,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            decision=decision,
            reason=reason,
            action=plan.action,
        )
        return bool(new_id)

    async def sweep(self, stop: asyncio.Event) -> None:
        """Every ``PLANNER_SWEEP_S``: catch proposals whose stream event was missed."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.planner_sweep_s)
            if stop.is_set():
                return
            try:
                await self.sweep_once()
            except REDIS_FAULTS as e:
                log.warning("planner sweep: redis: %s", e)

    async def sweep_once(self) -> int:
        """Publish the plans of live proposal hashes not published yet; returns how many.
        Already published (the usual case) is silent: no audit entry, no metric."""
        symbols = sorted(self.policy.allow_list)
        pipe = self.redis.pipeline(transaction=False)
        for symbol in symbols:
            pipe.hgetall(self.keys.proposal(symbol))
        rows = await pipe.execute(raise_on_error=False)
        now = self.clock.now()
        n = 0
        for symbol, fields in zip(symbols, rows, strict=True):
            if isinstance(fields, BaseException):  # one bad key skips its symbol only
                await self.sweep_fault(symbol, fields, self.keys.proposal(symbol), "hash")
                continue
            if not fields:
                continue
            try:
                plan, _error = plan_from_fields(fields, self.policy, now)
            except ContractError:
                continue
            if plan.reason_codes == (PROPOSAL_EXPIRED,):
                continue  # gone stale since: nothing to catch
            try:
                published = await self.publish(
                    plan, {"proposal": fields, "source": "sweep"}, audit_duplicate=False
                )
            except (WrongTypeError, redis.exceptions.ResponseError) as e:
                if not (isinstance(e, WrongTypeError) or is_wrong_type(e)):
                    raise
                await self.sweep_fault(plan.symbol, e, self.keys.dedupe(plan.plan_id), "string")
                continue
            if published:
                log.warning("planner sweep: plan %s had no stream event", plan.plan_id)
                n += 1
        return n

    async def sweep_fault(self, symbol: str, fault: BaseException, key: str, expected: str) -> None:
        """A key the sweep could not use (the proposal hash, a plan's dedupe key): a line
        naming it (a key of the wrong type: ``wrong_key_type``, key and types, and a metric);
        the other symbols go on."""
        if isinstance(fault, WrongTypeError) or is_wrong_type(fault):
            WRONG_TYPES.labels("apply-layer", "proposal" if expected == "hash" else "dedupe").inc()
            err = (
                fault
                if isinstance(fault, WrongTypeError)
                else await wrong_type(self.redis, key, expected)
            )
            log.error("planner sweep: %s %s: %s; symbol skipped", WRONG_KEY_TYPE, symbol, err)
        else:
            log.error("planner sweep: %s unreadable (%s); symbol skipped", key, fault)


def _context(plan: Plan, context: dict[str, Any] | None) -> dict[str, Any]:
    """A plan's audit context, but for its entry id (added last)."""
    return {
        "action": plan.action,
        "kill_score": str(plan.kill_score),
        "proposal_id": plan.proposal_id,
        **(context or {}),
    }


def _audit(plan: Plan, decision: str, reason: str, context: dict[str, Any]) -> dict[str, str]:
    return audit_fields(
        plan_id=plan.plan_id,
        symbol=plan.symbol,
        layer=LAYER,
        decision=decision,
        reason=reason,
        context=context,
        ts=time.time(),
    )


def plan_audit(
    plan: Plan, context: dict[str, Any], stream: str, *, audit_duplicate: bool
) -> PlanAudit:
    """The plan's audit entry for the publish step: the one :func:`_audit` makes with
    ``{**context, "entry_id": <id>}``, the step adding the entry id it gets (or '' for a
    duplicate, audited only when ``audit_duplicate``)."""
    return PlanAudit(
        stream=stream,
        fields=_audit(plan, plan.decision.value, plan.reason_codes[0], context),
        duplicate=(("DUPLICATE", DUPLICATE_PLAN) if audit_duplicate else None),
    )
