"""Trading state: ``halt``, ``reduce``, ``resume`` (with the operator's reason, audited).

The state change and its audit entry are one atomic step of the store
(:meth:`AtomicSteps.set_trading_state`: a MULTI/EXEC transaction, or on a Redis Cluster the
state first, then its entry): never an entry for a change that did not happen. The state
before is read fail-closed (a wrong key type or garbage reads HALTED and is recorded as
found); SET replaces whatever the key held, so ``resume`` repairs a broken key.
"""

from __future__ import annotations

import time

from permitchain.contract.errors import StoreError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.contract.trading_state import TradingState, read_trading_state
from permitchain.runtime.audit import audit_fields
from permitchain.store import AsyncRedis
from permitchain.store.steps import steps_for

OPERATOR_LAYER = "operator"
MAX_REASON_CHARS = 500
NO_REASON = "(no reason given)"


def clean_reason(reason: str) -> str:
    """One line, bounded: the audit stream is read by people and by `explain`."""
    text = " ".join(reason.split())[:MAX_REASON_CHARS]
    return text or NO_REASON


async def set_trading_state(
    r: AsyncRedis, keys: Keys, _s: Settings, state: TradingState, *, reason: str, operator: str
) -> tuple[TradingState, TradingState]:
    """Set the state and audit it atomically; returns (before, after) as read back."""
    before = await read_trading_state(r, keys)
    raw_type = await r.type(keys.trading_state)
    fields = audit_fields(
        plan_id="",
        layer=OPERATOR_LAYER,
        decision=f"TRADING_{state.value}",
        reason=clean_reason(reason),
        context={
            "before": before.value,
            "after": state.value,
            "operator": operator,
            "key_type_before": raw_type,
        },
        ts=time.time(),
    )
    await steps_for(r).set_trading_state(keys.trading_state, state.value, keys.decisions, fields)
    after = await read_trading_state(r, keys)
    if after is not state:
        raise StoreError(f"trading state reads {after.value} after setting {state.value}")
    if state is TradingState.ACTIVE:  # the operator checked the account: a changed position
        # mode (apply_layer.reconcile) is accepted as the new one
        observed = await r.hget(keys.reconcile, "observed_mode")
        if observed:
            await r.hset(keys.reconcile, mapping={"position_mode": observed, "mode_changed": ""})
    return before, after
