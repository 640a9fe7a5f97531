"""Writing a gatekeeper's permit: the permit (SET NX EX: a plan's decision is written once),
a wake-up event for the executor, and the audit entry, in one atomic step of the store
(:meth:`AtomicSteps.write_permit`, ``store/steps.py``): the event never reaches the executor
before the permit it announces.

:func:`claim_and_write_permit` (P3.3) takes the symbol's in-flight claim and writes the
allow, its event and its audit entry (:meth:`AtomicSteps.claim_and_write_permit`).

:func:`permit_json` serialises a permit once for both its value and its audit entry."""

from __future__ import annotations

from typing import Any

from permitchain.contract.keys import Keys
from permitchain.contract.models import GovernorPermit, P33Allow, P33Deny, canonical_json
from permitchain.contract.signing import Signer
from permitchain.runtime.audit import audit_fields
from permitchain.store import AsyncRedis
from permitchain.store.steps import steps_for


def permit_json(
    permit: GovernorPermit | P33Allow | P33Deny, signer: Signer | None
) -> tuple[str, dict[str, Any]]:
    """The permit signed by ``signer`` (unsigned when None), as ``(value, issued)``: the value
    written (``to_json()`` of the signed permit) and the object its audit entry keeps
    (``issued()``), from one ``body()``: the same as signing with ``model_copy`` and
    serialising it twice, without copying or rebuilding the body."""
    issued = permit.body()
    if permit.sig:
        issued["sig"] = permit.sig
    elif signer is not None:
        signer.stamp(issued)
    return canonical_json(issued), issued


async def write_permit(
    r: AsyncRedis,
    keys: Keys,
    *,
    key: str,
    permit_json: str,
    ttl_s: int,
    plan_id: str,
    symbol: str,
    layer: str,
    decision: str,
    reason: str,
    context: dict[str, Any],
    ts: float,
) -> bool:
    """Returns False when a permit for this plan already existed (the first decision stands)."""
    return await steps_for(r).write_permit(
        key,
        permit_json,
        ttl_s=ttl_s,
        event_stream=keys.permit_event_stream_for(symbol),
        event={"plan_id": plan_id, "layer": layer},
        audit_stream=keys.decisions,
        audit=audit_fields(
            plan_id=plan_id,
            symbol=symbol,
            layer=layer,
            decision=decision,
            reason=reason,
            context=context,
            ts=ts,
        ),
    )


async def claim_and_write_permit(
    r: AsyncRedis,
    keys: Keys,
    *,
    claim_key: str,
    claim_ms: int,
    key: str,
    permit_json: str,
    ttl_s: int,
    plan_id: str,
    symbol: str,
    layer: str,
    reason: str,
    context: dict[str, Any],
    ts: float,
) -> tuple[str, str]:
    """Take the in-flight claim ``claim_key`` for ``plan_id`` (SET NX PX ``claim_ms``) and
    write the allow ``permit_json`` with its event and its ``ALLOW`` audit entry, in one
    atomic step.

    Returns ``(verdict, holder)``: ``("allow", "")`` claim taken and permit written,
    ``("allow", plan_id)`` the same with the claim already this plan's; ``("held", other)``
    another plan holds the claim and ``("exists", "")`` the plan has a permit already: in
    both nothing was written. (On a Redis Cluster the claim is taken first, then the permit
    written as :func:`write_permit` writes it: never ``exists`` there.)"""
    audit = audit_fields(
        plan_id=plan_id,
        symbol=symbol,
        layer=layer,
        decision="ALLOW",
        reason=reason,
        context=context,
        ts=ts,
    )
    return await steps_for(r).claim_and_write_permit(
        claim_key,
        claim_ms,
        key,
        permit_json,
        plan_id=plan_id,
        layer=layer,
        ttl_s=ttl_s,
        event_stream=keys.permit_event_stream_for(symbol),
        audit_stream=keys.decisions,
        audit=audit,
    )
