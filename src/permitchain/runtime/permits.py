"""Writing a gatekeeper's permit: the permit (SET NX EX: a plan's decision is written once),
a wake-up event for the executor, and the audit entry, in one ordered pipeline.

A Redis Cluster client splits a pipeline by node and does not keep its order across nodes,
so there the permit is written first and the event and the audit entry after it: the event
must never reach the executor before the permit it announces.

:func:`claim_and_write_permit` (P3.3, plain and Sentinel servers) takes the symbol's
in-flight claim and writes the allow, its event and its audit entry in one script.

:func:`permit_json` serialises a permit once for both its value and its audit entry."""

from __future__ import annotations

from typing import Any

from permitchain.contract.keys import Keys
from permitchain.contract.models import GovernorPermit, P33Allow, P33Deny, canonical_json
from permitchain.contract.signing import Signer
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.store import AsyncRedis, is_cluster
from permitchain.store.scripts import flat_pairs, scripts_for

PERMIT_EVENTS_MAXLEN = 100_000


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
    cluster, created = is_cluster(r), None
    if cluster:
        created = await r.set(key, permit_json, ex=ttl_s, nx=True)
    pipe = r.pipeline(transaction=False)
    if not cluster:
        pipe.set(key, permit_json, ex=ttl_s, nx=True)
    pipe.xadd(
        keys.permit_event_stream_for(symbol),
        {"plan_id": plan_id, "layer": layer},
        maxlen=PERMIT_EVENTS_MAXLEN,
        approximate=True,
    )
    pipe.xadd(
        keys.decisions,
        audit_fields(
            plan_id=plan_id,
            symbol=symbol,
            layer=layer,
            decision=decision,
            reason=reason,
            context=context,
            ts=ts,
        ),
        maxlen=AUDIT_MAXLEN,
        approximate=True,
    )
    replies = await pipe.execute()
    return bool(created if cluster else replies[0])


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
    atomic script (``p33_claim_permit.lua``; not on a Redis Cluster: different slots).

    Returns ``(verdict, holder)``: ``("allow", "")`` claim taken and permit written,
    ``("allow", plan_id)`` the same with the claim already this plan's; ``("held", other)``
    another plan holds the claim and ``("exists", "")`` the plan has a permit already: in
    both nothing was written."""
    audit = audit_fields(
        plan_id=plan_id,
        symbol=symbol,
        layer=layer,
        decision="ALLOW",
        reason=reason,
        context=context,
        ts=ts,
    )
    reply = await scripts_for(r).p33_claim_permit(
        keys=[claim_key, key, keys.permit_event_stream_for(symbol), keys.decisions],
        args=[
            plan_id,
            claim_ms,
            permit_json,
            ttl_s,
            PERMIT_EVENTS_MAXLEN,
            AUDIT_MAXLEN,
            layer,
            *flat_pairs(audit),
        ],
    )
    verdict, holder = reply
    return str(verdict), str(holder)
