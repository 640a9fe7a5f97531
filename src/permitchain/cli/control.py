"""Trading state: ``halt``, ``reduce``, ``resume`` (with the operator's reason, audited)."""

from __future__ import annotations

import time

from permitchain.governor.policy import TradingState, parse_trading_state
from permitchain.keys import Keys
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.settings import Settings
from permitchain.store import AsyncRedis


async def set_trading_state(
    r: AsyncRedis, keys: Keys, _s: Settings, state: TradingState, *, reason: str, operator: str
) -> tuple[TradingState, TradingState]:
    before = parse_trading_state(await r.get(keys.trading_state))
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.trading_state, state.value)
    pipe.xadd(keys.decisions, audit_fields(
        plan_id="", layer="operator", decision=f"TRADING_{state.value}", reason=reason or "-",
        context={"before": before.value, "after": state.value, "operator": operator},
        ts=time.time(),
    ), maxlen=AUDIT_MAXLEN, approximate=True)  # fmt: skip
    await pipe.execute()
    return before, state
