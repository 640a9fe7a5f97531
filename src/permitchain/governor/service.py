"""Governor runner (P3.2): plans → governor permits; results → rate-limit bookkeeping.

* Consumer group ``governor`` on the plan stream: read the inputs (``store.py``), decide
  (``policy.py``, pure), reserve a slot when the production policy grants, then write the
  permit (grant or deny, signed with the governor's key when one is configured), the wake-up
  event and the audit entry in one pipeline.
* Consumer group ``governor-results`` on the result stream: each result confirms the plan's
  execution (filled, partially filled, unknown) or releases its reservation (rejected,
  blocked, dry run).
* A task refreshes the trading-state gauge, so it is right even when no plan arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from prometheus_client import Gauge

from permitchain.contract.keys import GROUP_GOVERNOR, GROUP_GOVERNOR_RESULTS, Keys
from permitchain.contract.models import GovernorPermit, Plan, Result
from permitchain.contract.reasons import POLICY_OK
from permitchain.contract.settings import Settings
from permitchain.contract.signing import GOVERNOR, OPERATOR
from permitchain.contract.trading_state import TradingState
from permitchain.governor.policy import GovernorDecision, GovernorPolicy, decide, is_reduce_only
from permitchain.governor.rates import Settlement, reservation_ttl_s, settlement
from permitchain.governor.store import GovernorStore
from permitchain.keyfiles import signer_for, verifier_for
from permitchain.operator_exit import is_operator_plan, operator_problem
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.runtime.metrics import LabelledCounter
from permitchain.runtime.permits import permit_json, write_permit
from permitchain.runtime.service import Consumer, by_symbol, shard_consumers
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.governor")
LAYER = "governor"
STATE_REFRESH_S = 2.0
PERMITS = LabelledCounter(
    "governor_permit_total", "Governor permits", ["symbol", "decision", "reason"]
)
SETTLED = LabelledCounter("governor_results_total", "Results settled", ["symbol", "settlement"])
TRADING_STATE = Gauge(
    "governor_trading_state", "Trading state seen (0 ACTIVE, 1 REDUCING, 2 HALTED)"
)
_STATE_VALUE = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class Governor:
    def __init__(self, r: AsyncRedis, keys: Keys, settings: Settings, clock: Clock) -> None:
        self.redis, self.keys, self.settings, self.clock = r, keys, settings, clock
        self.policy = GovernorPolicy.from_settings(settings)
        self.store = GovernorStore(r, keys)
        self.reservation_ttl_s = reservation_ttl_s(settings.permit_ttl_s, settings.permit_wait_ms)
        self.signer = signer_for(settings, GOVERNOR)
        self.verifier = verifier_for(settings, (OPERATOR,))  # operators' emergency exits

    def consumers(self) -> list[Consumer]:
        owned = self.settings.owned_shards
        plans = shard_consumers(
            self.keys.plan_stream_shard, owned, GROUP_GOVERNOR, self.handle, partition=by_symbol
        )
        if not self.counts_executions:
            return plans
        results = shard_consumers(
            self.keys.result_stream_shard,
            owned,
            GROUP_GOVERNOR_RESULTS,
            self.handle_result,
            partition=by_symbol,
        )
        return [*plans, *results]

    @property
    def counts_executions(self) -> bool:
        """Rate windows and reservations exist only where the production policy decides;
        with auto-approve the result stream has nothing for the governor."""
        return not (self.policy.mode in ("dry_run", "testnet") and self.policy.testnet_auto_approve)

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        plan = Plan.from_fields(fields)
        if not plan.is_execute:
            return
        now = self.clock.now()
        inp = await self.store.read_input(plan.symbol, now, windows=not self.policy.auto_approves)
        TRADING_STATE.set(_STATE_VALUE[inp.trading_state])
        if is_operator_plan(plan):
            inp = dataclasses.replace(
                inp, operator_problem=operator_problem(plan, self.verifier, now)
            )
        decision = decide(plan, inp, self.policy, now)
        if decision.granted and decision.reason == POLICY_OK:
            decision = await self.reserve(plan, decision, now)
        written = await self.issue(plan, decision, now)
        if not written and decision.context.get("reservation") == "reserved":
            # A redelivery whose first decision stands (permits are written once): the slot
            # just taken backs no permit, so give it back at once.
            await self.store.settle(plan.symbol, plan.plan_id, Settlement.RELEASE, now)

    async def reserve(self, plan: Plan, d: GovernorDecision, now: float) -> GovernorDecision:
        """Take the slot atomically; a limit reached meanwhile (another plan, another governor)
        turns the grant into a deny with the script's counts."""
        verdict, c5, ch = await self.store.reserve(
            plan.symbol,
            plan.plan_id,
            now,
            self.reservation_ttl_s,
            self.policy.max_exec_per_5min,
            self.policy.max_exec_per_hour,
        )
        counts = {"count_5min": c5, "count_hour": ch}
        if verdict not in ("reserved", "already"):
            return GovernorDecision(False, verdict, d.computed_qty, d.computed_notional, counts)
        if not is_reduce_only(plan) and d.computed_notional is not None:
            await self.store.add_notional(plan.plan_id, d.computed_notional, now)
        return GovernorDecision(
            True,
            d.reason,
            d.computed_qty,
            d.computed_notional,
            {**d.context, **counts, "reservation": verdict},
        )

    async def handle_result(self, entry_id: str, fields: dict[str, str]) -> None:
        result = Result.from_fields(fields)
        action = settlement(result.status)
        await self.store.settle(result.symbol, result.plan_id, action, result.ts)
        SETTLED.inc(result.symbol, action.value)

    async def issue(self, plan: Plan, d: GovernorDecision, now: float) -> bool:
        """Write the permit (once), its wake-up event and audit entry. False when a permit for
        the plan already existed."""
        permit = GovernorPermit(
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            decision="GRANT" if d.granted else "DENY",
            granted=d.granted,
            reason=d.reason,
            computed_qty=d.computed_qty,
            computed_notional=d.computed_notional,
            mode=self.policy.mode,
            created_at=now,
            expires_at=now + self.settings.permit_ttl_s,
        )
        value, issued = permit_json(permit, self.signer)
        decision = permit.decision
        written = await write_permit(
            self.redis,
            self.keys,
            key=self.keys.permit_governor(plan.plan_id),
            permit_json=value,
            ttl_s=self.settings.permit_ttl_s,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            layer=LAYER,
            decision=decision,
            reason=d.reason,
            context={"permit": issued, **d.context},
            ts=now,
        )
        PERMITS.inc(plan.symbol, decision, d.reason)
        log_decision(
            log,
            layer=LAYER,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            decision=decision,
            reason=d.reason,
        )
        return written

    async def watch_state(self, stop: asyncio.Event) -> None:
        """Keep ``governor_trading_state`` current between plans."""
        while not stop.is_set():
            try:
                TRADING_STATE.set(_STATE_VALUE[await self.store.trading_state()])
            except REDIS_FAULTS:
                TRADING_STATE.set(_STATE_VALUE[TradingState.HALTED])  # unreadable: HALTED
            except Exception:  # a gauge must never stop the governor
                log.exception("trading-state gauge refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATE_REFRESH_S)
