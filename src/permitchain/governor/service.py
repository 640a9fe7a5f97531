"""Governor runner: consumer group ``governor`` on the plan stream → governor permits."""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from permitchain.governor.policy import (
    GovernorDecision,
    GovernorInput,
    GovernorPolicy,
    TradingState,
    decide,
    parse_trading_state,
)
from permitchain.keys import GROUP_GOVERNOR, Keys
from permitchain.models import GovernorPermit, Plan
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.runtime.permits import write_permit
from permitchain.runtime.service import Consumer
from permitchain.settings import Settings
from permitchain.signing import sign
from permitchain.store import REDIS_FAULTS

log = logging.getLogger("permitchain.governor")
LAYER = "governor"
PERMITS = Counter("governor_permit_total", "Governor permits", ["symbol", "decision", "reason"])
TRADING_STATE = Gauge(
    "governor_trading_state", "Trading state seen (0 ACTIVE, 1 REDUCING, 2 HALTED)"
)
_STATE_VALUE = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def _dec(v: str | None) -> Decimal | None:
    try:
        d = Decimal(v) if v else None
    except InvalidOperation:
        return None
    return d if d is not None and d.is_finite() else None


class Governor:
    def __init__(self, r: Redis, keys: Keys, settings: Settings, clock: Clock) -> None:
        self.r, self.k, self.s, self.clock = r, keys, settings, clock
        self.policy = GovernorPolicy(
            mode=settings.apply_mode.value,
            allow_list=settings.allow_list,
            plan_max_age_s=settings.plan_max_age_s,
            testnet_auto_approve=settings.testnet_auto_approve,
            max_exec_per_hour=settings.max_exec_per_hour,
            max_exec_per_5min=settings.max_exec_per_5min,
            max_notional_per_trade=settings.max_notional_per_trade,
            daily_notional_cap=settings.daily_notional_cap,
        )

    def consumer(self) -> Consumer:
        return Consumer(self.k.plan_stream, GROUP_GOVERNOR, self.handle)

    async def read_input(self, plan: Plan) -> GovernorInput:
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.k.trading_state)
        pipe.hmget(self.k.snapshot(plan.symbol), ["position_amt", "mark_price"])
        try:
            raw_state, (amt, mark) = await pipe.execute()
            state = parse_trading_state(raw_state)
        except REDIS_FAULTS:
            raise
        except Exception:
            state, amt, mark = TradingState.HALTED, None, None
        TRADING_STATE.set(_STATE_VALUE[state])
        return GovernorInput(trading_state=state, position_amt=_dec(amt), mark_price=_dec(mark))

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        plan = Plan.from_fields(fields)
        if not plan.is_execute:
            return
        now = self.clock.now()
        decision = decide(plan, await self.read_input(plan), self.policy, now)
        await self.issue(plan, decision, now)

    async def issue(self, plan: Plan, d: GovernorDecision, now: float) -> None:
        permit = GovernorPermit(
            plan_id=plan.plan_id, symbol=plan.symbol, decision="GRANT" if d.granted else "DENY",
            granted=d.granted, reason=d.reason, computed_qty=d.computed_qty,
            computed_notional=d.computed_notional, mode=self.policy.mode, created_at=now,
            expires_at=now + self.s.permit_ttl_s,
        )  # fmt: skip
        if self.s.permit_key_governor is not None:
            permit = permit.model_copy(
                update={"sig": sign(permit.body(), self.s.permit_key_governor.get_secret_value())}
            )
        decision = permit.decision
        await write_permit(
            self.r, self.k, key=self.k.permit_governor(plan.plan_id), permit_json=permit.to_json(),
            ttl_s=self.s.permit_ttl_s, plan_id=plan.plan_id, symbol=plan.symbol, layer=LAYER,
            decision=decision, reason=d.reason, context={"permit": permit.body(), **d.context},
            ts=now,
        )  # fmt: skip
        PERMITS.labels(plan.symbol, decision, d.reason).inc()
        log_decision(log, layer=LAYER, plan_id=plan.plan_id, symbol=plan.symbol,
                     decision=decision, reason=d.reason)  # fmt: skip
