"""``permitchain flatten``: sign an operator request per symbol, publish its plan, and wait
for its result.

Each request gets an audit entry (layer ``operator``, decision ``FLATTEN_REQUEST``, the request
in its context) and the plan one (``PLAN``, reason ``operator_emergency_exit``), both under the
plan's id, so ``permitchain explain PLAN`` shows the request, both permits and the order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from permitchain.apply_layer.planner_service import publish_plan
from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal
from permitchain.contract.reasons import OPERATOR_EMERGENCY_EXIT
from permitchain.contract.settings import Settings
from permitchain.contract.signing import Signer
from permitchain.contract.snapshot import parse_snapshot
from permitchain.operator_exit import OPERATOR_SOURCE, flatten_plan, make_request
from permitchain.ops import reads as rd
from permitchain.runtime.audit import add_audit
from permitchain.store import AsyncRedis

FLATTEN_REQUEST = "FLATTEN_REQUEST"


@dataclass(frozen=True, slots=True)
class Flattened:
    symbol: str
    plan_id: str
    request_id: str
    published: bool
    result: dict[str, str] | None  # the plan's result fields, None if none within the wait


async def open_symbols(r: AsyncRedis, keys: Keys, settings: Settings) -> list[str]:
    """Allowlisted symbols whose P3.3 snapshot shows a position (``--all``)."""
    out = []
    for symbol in sorted(settings.allow_list):
        snap = parse_snapshot(await r.hgetall(keys.snapshot(symbol)))
        if snap is not None and snap.position_amt != 0:
            out.append(symbol)
    return out


async def flatten(
    r: AsyncRedis,
    keys: Keys,
    settings: Settings,
    *,
    symbols: list[str],
    reason: str,
    operator: str,
    signer: Signer,
    wait_s: float,
) -> list[Flattened]:
    """One signed request and plan per symbol; then wait up to ``wait_s`` for the results."""
    start = await rd.last_ids(r, keys.result_streams)
    plans: list[tuple[str, str, str, bool]] = []
    for symbol in symbols:
        now = time.time()
        req = make_request(
            symbol=symbol,
            reason=reason,
            operator=operator,
            mode=settings.apply_mode.value,
            now=now,
            ttl_s=settings.plan_max_age_s,
            signer=signer,
        )
        plan = flatten_plan(req)
        await add_audit(
            r,
            keys,
            plan_id=plan.plan_id,
            symbol=symbol,
            layer=OPERATOR_SOURCE,
            decision=FLATTEN_REQUEST,
            reason=reason,
            context={"request": req, "operator": operator},
            ts=now,
        )
        flat: list[str] = []
        for name, value in plan.to_fields().items():
            flat += [name, value]
        entry = await publish_plan(
            r,
            keys,
            plan.plan_id,
            settings.dedupe_ttl_s,
            settings.plan_stream_maxlen,
            flat,
        )
        await add_audit(
            r,
            keys,
            plan_id=plan.plan_id,
            symbol=symbol,
            layer=OPERATOR_SOURCE,
            decision="PLAN",
            reason=OPERATOR_EMERGENCY_EXIT,
            context={
                "entry_id": entry or "",
                "action": plan.action,
                "close_fraction": fmt_decimal(plan.close_fraction),
                "request_id": req["request_id"],
            },
            ts=now,
        )
        plans.append((symbol, plan.plan_id, str(req["request_id"]), entry is not None))
    results = await _wait_results(r, keys, {p[1] for p in plans}, start, wait_s)
    return [Flattened(s, pid, rid, pub, results.get(pid)) for s, pid, rid, pub in plans]


async def _wait_results(
    r: AsyncRedis, keys: Keys, plan_ids: set[str], after: dict[str, str], wait_s: float
) -> dict[str, dict[str, str]]:
    """The results of ``plan_ids`` on the result streams (every shard) after ``after``."""
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + wait_s
    while plan_ids - found.keys():
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        resp = await rd.xread(r, after, count=100, block_ms=left_ms)
        for stream, entries in resp:
            for entry_id, fields in entries:
                after[stream] = entry_id
                if fields.get("plan_id") in plan_ids:
                    found[fields["plan_id"]] = fields
    return found
