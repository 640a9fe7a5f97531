"""Trading state: ``halt``, ``reduce``, ``resume`` (with the operator's reason, audited).

The state change and its audit entry are one MULTI/EXEC transaction: there is never a state
without the entry that says who set it and why, nor an entry for a change that did not
happen. The state before is read fail-closed (a wrong key type or garbage reads HALTED and is
recorded as found); SET replaces whatever the key held, so ``resume`` repairs a broken key.

On a Redis Cluster the state key and the audit stream are in different slots: there the two
are written one after the other, the state first (a crash between leaves the state set
without its entry; never an entry for a change that did not happen).
"""

from __future__ import annotations

import time

from permitchain.contract.errors import StoreError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.contract.trading_state import TradingState, read_trading_state
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.store import AsyncRedis, is_cluster

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
    if is_cluster(r):
        await r.set(keys.trading_state, state.value)
        await r.xadd(keys.decisions, fields, maxlen=AUDIT_MAXLEN, approximate=True)
    else:
        pipe = r.pipeline(transaction=True)
        pipe.set(keys.trading_state, state.value)
        pipe.xadd(keys.decisions, fields, maxlen=AUDIT_MAXLEN, approximate=True)
        await pipe.execute()
    after = await read_trading_state(r, keys)
    if after is not state:
        raise StoreError(f"trading state reads {after.value} after setting {state.value}")
    if state is TradingState.ACTIVE:  # the operator checked the account: a changed position
        # mode (apply_layer.reconcile) is accepted as the new one
        observed = await r.hget(keys.reconcile, "observed_mode")
        if observed:
            await r.hset(keys.reconcile, mapping={"position_mode": observed, "mode_changed": ""})
    return before, after
