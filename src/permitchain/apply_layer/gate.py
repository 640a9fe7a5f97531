"""The gate for external executors: the executor's side (docs/design.md §15, "Gate for
external executors").

A plan proposed with ``executor=external`` goes through the chain like any other: both
gatekeepers judge it, and the executor consumes both permits by value in one Lua step and
verifies their signatures right after (``Executor.permit_problem``, the signing module's
functions). Then, instead of sending the order, it records a *grant* in the plan's exec
record, ``permitted → granted``: side, quantity (P3.3's ``safe_close_qty``), client order id
and ``grant_expires_at``. The bot takes it with ``permitchain_client``'s claim script
(``granted → claimed``, once, by value), sends its order with that client order id, and
reports the outcome (``claimed | unknown → filled | rejected``, the plan's one result).

What the resolver does with a gated plan that nobody finishes (:func:`due`):

- ``granted`` past ``grant_expires_at``: no claim can succeed any more (the claim script
  checks the expiry with the server's clock), so the plan ends ``blocked`` with
  ``gate_not_claimed``; nothing was sent through the gate.
- ``claimed`` and not reported ``GATE_REPORT_S`` after the claim, or sooner when the bot's
  process is gone (same host, pid dead): the built-in executor's rules for an order whose
  outcome is open. The order is looked up by its client order id, never re-sent; a final
  answer is the plan's result, no answer moves it to ``unknown`` and, after the resolver's
  limits, to a final ``unknown`` (P3.3 then stops the symbol until someone reconciles). A
  report that arrives before that final result still counts.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from prometheus_client import Counter

from permitchain.apply_layer.exec_store import ExecStore
from permitchain.apply_layer.orders import Submission, latency_ms
from permitchain.contract.models import (
    Plan,
    Result,
    ResultStatus,
    fmt_decimal,
    parse_decimal,
    parse_ts,
)
from permitchain.contract.reasons import GATE_GRANTED, GATE_NOT_CLAIMED
from permitchain.runtime.audit import audit_fields

log = logging.getLogger("permitchain.executor")

GRANTED = "granted"
CLAIMED = "claimed"
LAYER = "executor"

GATE_EVENTS = Counter(
    "apply_gate_total",
    "Gate for external executors: grants written, grants expired unclaimed",
    ["event"],
)


def grant_fields(sub: Submission, now: float, claim_s: float) -> dict[str, str]:
    """What a grant writes into the exec record: the submission (as the resolver reads it),
    the executor, and when the grant expires."""
    return {
        **sub.to_fields(),
        "executor": "external",
        "granted_at": f"{now:.6f}",
        "grant_expires_at": f"{now + claim_s:.6f}",
    }


async def grant(store: ExecStore, plan: Plan, sub: Submission, now: float, claim_s: float) -> bool:
    """Move ``permitted → granted`` with the grant and its audit entry (one atomic step);
    listed in the open index, so the resolver finds it if nobody claims it."""
    audit = audit_fields(
        plan_id=plan.plan_id,
        symbol=plan.symbol,
        layer=LAYER,
        decision="GRANTED",
        reason=GATE_GRANTED,
        ts=now,
        context={
            "side": sub.side,
            "qty": fmt_decimal(sub.qty),
            "client_order_id": sub.client_order_id,
            "claim_s": claim_s,
        },
    )
    moved, state = await store.move(
        plan.plan_id,
        from_states=("permitted",),
        to=GRANTED,
        fields=grant_fields(sub, now, claim_s),
        index="add",
        audit=audit,
    )
    if moved:
        GATE_EVENTS.labels("granted").inc()
        log.info(
            "[GATE] GRANT plan=%s symbol=%s side=%s qty=%s client_order_id=%s",
            plan.plan_id,
            plan.symbol,
            sub.side,
            fmt_decimal(sub.qty),
            sub.client_order_id,
        )
    else:
        log.warning("[GATE] plan=%s not granted: its exec record is %s", plan.plan_id, state)
    return moved


def due(record: dict[str, str], now: float, report_s: float, *, sender_gone: bool) -> bool:
    """Whether the resolver acts on a gated plan now (see the module docstring);
    ``sender_gone``: the claiming process is known dead. An unreadable time counts as due:
    the resolver's rules then finish the plan."""
    state = record.get("state", "")
    try:
        if state == GRANTED:
            return now >= parse_ts(record.get("grant_expires_at"), "grant_expires_at")
        if state == CLAIMED:
            claimed = parse_ts(record.get("submitted_at"), "submitted_at")
            return now - claimed >= report_s or sender_gone
    except ValueError:
        return True
    return True


async def expire_grant(store: ExecStore, plan_id: str, record: dict[str, str], now: float) -> bool:
    """A grant nobody claimed in time: the plan's one result, ``blocked`` ``gate_not_claimed``."""
    symbol = record.get("symbol", "")
    side = record.get("side", "")
    try:
        proposal_ts = parse_ts(record.get("proposal_ts"), "proposal_ts")
        qty = parse_decimal(record.get("qty") or "0", "qty")
    except ValueError:
        proposal_ts, qty = now, Decimal(0)
    result = Result(
        plan_id=plan_id,
        symbol=symbol,
        executed=False,
        status=ResultStatus.BLOCKED,
        reason=GATE_NOT_CLAIMED,
        side=side if side in ("BUY", "SELL") else "",
        requested_qty=qty,
        error="granted, never claimed before grant_expires_at",
        chain_latency_ms=latency_ms(proposal_ts, now),
        ts=now,
    )
    moved = await store.publish(
        result, from_states=(GRANTED,), to="blocked", context={"gate": "claim expired"}
    )
    if moved:
        GATE_EVENTS.labels("not_claimed").inc()
        log.warning("[GATE] BLOCK plan=%s reason=%s", plan_id, GATE_NOT_CLAIMED)
    return moved
