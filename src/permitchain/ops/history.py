"""Plan history from Redis: ``plans`` (the plan stream), ``permits`` (live permit keys, with
TTLs) and ``explain`` (one plan's whole story from the audit stream, readable long after its
permits expired: proposal, plan decision, each gatekeeper's decision and reason with context,
the consume verdict, the order, the result)."""

from __future__ import annotations

import json
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.contract.models import iso_utc
from permitchain.ops import reads as rd
from permitchain.store import AsyncRedis, first_fault

AUDIT_PAGE = 2000
PLAN_PAGE = 500
LAYERS = ("governor", "position-brain")


def _ts(entry_id: str, raw: str | None) -> float:
    try:
        return float(raw) if raw else int(entry_id.split("-", maxsplit=1)[0]) / 1000
    except ValueError:
        return int(entry_id.split("-", maxsplit=1)[0]) / 1000


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {"unreadable": raw}


def audit_entry(entry_id: str, f: dict[str, str]) -> dict[str, Any]:
    """One entry of the decisions stream, context parsed."""
    return {
        "id": entry_id,
        "ts": _ts(entry_id, f.get("ts")),
        "plan_id": f.get("plan_id", ""),
        "symbol": f.get("symbol", ""),
        "layer": f.get("layer", ""),
        "decision": f.get("decision", ""),
        "reason": f.get("reason", ""),
        "context": _json(f.get("context")),
    }


def _is_origin(e: dict[str, Any]) -> bool:
    """A plan's first audit entry: the planner's decision, or an operator's signed request."""
    if e["layer"] == "operator":
        return bool(e["decision"] == "FLATTEN_REQUEST")
    return bool(e["layer"] == "planner" and e["decision"] != "DUPLICATE")


def _plan_entry_id(audit: list[dict[str, Any]]) -> str | None:
    """The plan's stream entry id, as the planner's decision or an operator's PLAN entry
    (``permitchain flatten``) recorded it."""
    for e in audit:
        ctx = e.get("context")
        is_plan = _is_origin(e) or (e["layer"] == "operator" and e["decision"] == "PLAN")
        if is_plan and isinstance(ctx, dict) and ctx.get("entry_id"):
            return str(ctx["entry_id"])
    return None


async def audit_of(
    r: AsyncRedis, k: Keys, plan_id: str, *, max_scan: int | None = None
) -> list[dict[str, Any]]:
    """Every audit entry of one plan, oldest first. Reads newest → oldest and stops at the
    planner's first decision (a plan's origin), so recent plans are found quickly."""
    found: list[dict[str, Any]] = []
    end, scanned = "+", 0
    while max_scan is None or scanned < max_scan:
        page = await rd.xrevrange(r, k.decisions, end, count=AUDIT_PAGE)
        if not page:
            break
        for entry_id, f in page:
            if f.get("plan_id") == plan_id:
                found.append(audit_entry(entry_id, f))
        scanned += len(page)
        if any(_is_origin(e) for e in found) or len(page) < AUDIT_PAGE:
            break
        end = f"({page[-1][0]}"
    return sorted(found, key=lambda e: (e["ts"], e["id"]))


def parse_permit(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    obj = _json(raw)
    return obj if isinstance(obj, dict) else {"unreadable": raw}


def permit_row(
    layer: str, plan_id: str, permit: dict[str, Any] | None, pttl_ms: int
) -> dict[str, Any]:
    p = permit or {}
    if layer == "governor":
        decision = p.get("decision")
    else:
        decision = (
            "ALLOW" if p.get("allow") is True else "DENY" if p.get("allow") is False else None
        )
    return {
        "plan_id": plan_id,
        "layer": layer,
        "present": permit is not None,
        "symbol": p.get("symbol"),
        "decision": decision,
        "reason": p.get("reason") or ("ok" if decision == "ALLOW" else None),
        "ttl_s": round(pttl_ms / 1000, 1) if pttl_ms > 0 else None,
        "expires_at": p.get("expires_at"),
        "safe_close_qty": p.get("safe_close_qty"),
        "signed": bool(p.get("sig")),
    }


def _permit_key(k: Keys, layer: str, plan_id: str) -> str:
    return k.permit_governor(plan_id) if layer == "governor" else k.permit_p33(plan_id)


def _iso(raw: str) -> str:
    try:
        return iso_utc(float(raw))
    except (ValueError, OverflowError, OSError):
        return raw


async def permits_of(r: AsyncRedis, k: Keys, plan_id: str) -> list[dict[str, Any]]:
    """Both permits of one plan as they stand now (absent once consumed or expired)."""
    pipe = r.pipeline(transaction=False)
    for layer in LAYERS:
        pipe.get(_permit_key(k, layer, plan_id))
        pipe.pttl(_permit_key(k, layer, plan_id))
    pipe.hmget(k.exec_record(plan_id), ["state", "permitted_at"])
    replies = await pipe.execute(raise_on_error=False)
    fault = await first_fault(
        r,
        replies,
        [
            (_permit_key(k, LAYERS[0], plan_id), "string"),
            None,
            (_permit_key(k, LAYERS[1], plan_id), "string"),
            None,
            (k.exec_record(plan_id), "hash"),
        ],
    )
    if fault is not None:  # a key of the wrong type: WrongTypeError naming it
        raise fault
    *vals, (state, permitted_at) = replies
    rows = []
    for i, layer in enumerate(LAYERS):
        row = permit_row(layer, plan_id, parse_permit(vals[2 * i]), int(vals[2 * i + 1]))
        if not row["present"]:
            row["note"] = (
                f"consumed at {_iso(permitted_at)}"
                if permitted_at
                else "expired or never issued" + (f" (exec state {state})" if state else "")
            )
        rows.append(row)
    return rows


async def live_permits(r: AsyncRedis, k: Keys, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Every permit key alive now, newest first."""
    rows: list[dict[str, Any]] = []
    for layer in LAYERS:
        pattern = _permit_key(k, layer, "*")
        keys = [key async for key in r.scan_iter(match=pattern, count=1000)][:limit]
        if not keys:
            continue
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        vals = await pipe.execute(raise_on_error=False)
        fault = await first_fault(r, vals, [w for key in keys for w in ((key, "string"), None)])
        if fault is not None:  # a key of the wrong type: WrongTypeError naming it
            raise fault
        for i, key in enumerate(keys):
            plan_id = key[key.index("{") + 1 : key.index("}")]
            if vals[2 * i] is not None:
                rows.append(
                    permit_row(layer, plan_id, parse_permit(vals[2 * i]), int(vals[2 * i + 1]))
                )
    return sorted(rows, key=lambda p: (-(p["ttl_s"] or 0), p["plan_id"], p["layer"]))


async def list_plans(
    r: AsyncRedis,
    k: Keys,
    *,
    symbol: str | None = None,
    decision: str | None = None,
    last: int = 20,
) -> list[dict[str, Any]]:
    """The newest plans on the plan stream, with what became of each (exec record).
    ``decision`` matches the plan's decision (EXECUTE/SKIP) or its final state (blocked,
    filled, dry_run, …), case-insensitively. With several shards (STREAM_SHARDS) the newest
    of each shard's plan stream (one symbol: its shard's only), merged newest first."""
    want = decision.lower() if decision else None
    streams = (k.plan_stream_for(symbol),) if symbol else k.plan_streams
    out: list[dict[str, Any]] = []
    for stream in streams:
        out += await _plans_of(r, k, stream, symbol, want, last)
    if len(streams) > 1:
        out.sort(key=lambda p: _id_key(str(p["entry_id"])), reverse=True)
    return out[:last]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _plans_of(
    r: AsyncRedis, k: Keys, stream: str, symbol: str | None, want: str | None, last: int
) -> list[dict[str, Any]]:
    """The newest ``last`` plans of one plan stream that match (see :func:`list_plans`)."""
    out: list[dict[str, Any]] = []
    end = "+"
    while len(out) < last:
        page = await rd.xrevrange(r, stream, end, count=PLAN_PAGE)
        if not page:
            break
        pipe = r.pipeline(transaction=False)
        for _id, f in page:
            pipe.hmget(k.exec_record(f.get("plan_id", "")), ["state", "reason", "filled_qty"])
        for (entry_id, f), (state, reason, filled) in zip(page, await pipe.execute(), strict=True):
            if symbol and f.get("symbol") != symbol:
                continue
            if want and want not in (f.get("decision", "").lower(), (state or "").lower()):
                continue
            out.append(
                {
                    "entry_id": entry_id,
                    "plan_id": f.get("plan_id"),
                    "created_at": _ts(entry_id, f.get("created_at")),
                    "symbol": f.get("symbol"),
                    "action": f.get("action"),
                    "decision": f.get("decision"),
                    "reason_codes": f.get("reason_codes"),
                    "kill_score": f.get("kill_score"),
                    "mode": f.get("mode"),
                    "source": f.get("source"),
                    "state": state,
                    "state_reason": reason,
                    "filled_qty": filled,
                }
            )
            if len(out) >= last:
                break
        if len(page) < PLAN_PAGE:
            break
        end = f"({page[-1][0]}"
    return out


def _summary(e: dict[str, Any]) -> str:
    """The context that matters for one decision, as ``k=v`` pairs."""
    ctx: dict[str, Any] = e["context"] if isinstance(e["context"], dict) else {}
    layer = e["layer"]
    if layer == "planner":
        keep = {k: ctx.get(k) for k in ("action", "kill_score", "proposal_id")}
    elif layer in LAYERS and isinstance(ctx.get("permit"), dict):
        p = ctx["permit"]
        names = (
            ("computed_qty", "computed_notional", "mode")
            if layer == "governor"
            else (
                "safe_close_qty",
                "side",
                "exchange_position_amt",
                "ledger_position_amt",
                "snapshot_age_sec",
            )
        )
        keep = {k: p.get(k) for k in names}
        keep.update(p.get("context") or {})
        keep.update({k: v for k, v in ctx.items() if k != "permit"})
    elif layer == "executor" and isinstance(ctx.get("result"), dict):
        res = ctx["result"]
        keep = {
            k: res.get(k)
            for k in (
                "status",
                "side",
                "requested_qty",
                "filled_qty",
                "avg_price",
                "order_id",
                "client_order_id",
                "reduce_only",
                "permit_wait_ms",
                "chain_latency_ms",
                "error",
            )
        }
    else:
        keep = dict(ctx)
    return " ".join(f"{k}={v}" for k, v in keep.items() if v not in (None, "", {}))


def story(audit: list[dict[str, Any]], exec_h: dict[str, str]) -> list[dict[str, Any]]:
    """The plan's steps in time order: each audit entry, plus the consume verdict from the
    exec record (kept 7 days)."""
    steps = [
        {
            "ts": e["ts"],
            "layer": e["layer"],
            "decision": e["decision"],
            "reason": e["reason"],
            "detail": _summary(e),
            "context": e["context"],
        }
        for e in audit
    ]
    if exec_h.get("permitted_at"):
        steps.append(
            {
                "ts": _ts("0-0", exec_h["permitted_at"]),
                "layer": "consume",
                "decision": "CONSUMED",
                "reason": "ok",
                "detail": "both permits verified by value and deleted in one step",
                "context": {},
            }
        )
    elif exec_h.get("state") == "blocked":
        steps.append(
            {
                "ts": _ts("0-0", exec_h.get("updated_at")),
                "layer": "consume",
                "decision": "BLOCKED",
                "reason": exec_h.get("reason", ""),
                "detail": exec_h.get("detail", ""),
                "context": {},
            }
        )
    # Time order, except that the plan's origin comes first (the planner audits right after
    # publishing, so a fast gatekeeper can stamp an earlier time) and the consume verdict
    # (stamped by the server's clock) sits right before the executor's result.
    origin = [st for st in steps if st["layer"] == "planner" and st["decision"] != "DUPLICATE"]
    rest = sorted((st for st in steps if st not in origin), key=lambda st: float(st["ts"]))
    consume = [st for st in rest if st["layer"] == "consume"]
    rest = [st for st in rest if st["layer"] != "consume"]
    at = next((i for i, st in enumerate(rest) if st["layer"] == "executor"), len(rest))
    return origin[:1] + rest[:at] + consume + rest[at:] + origin[1:]


async def explain(r: AsyncRedis, k: Keys, plan_id: str) -> dict[str, Any] | None:
    """Everything known about one plan, or None when nothing is."""
    audit = await audit_of(r, k, plan_id)
    exec_h = await rd.hgetall(r, k.exec_record(plan_id))
    if not audit and not exec_h:
        return None
    origin = next((e for e in audit if _is_origin(e)), None)
    plan: dict[str, Any] | None = None
    entry_id = _plan_entry_id(audit)
    symbol = next((str(e["symbol"]) for e in audit if e.get("symbol")), "")
    if entry_id:
        rows = await rd.xrange(r, k.plan_stream_for(symbol), entry_id, entry_id)
        plan = dict(rows[0][1]) if rows else None
    result = next(
        (
            e["context"].get("result")
            for e in reversed(audit)
            if e["layer"] == "executor" and isinstance(e["context"], dict)
        ),
        None,
    )
    proposal = (origin or {}).get("context", {}).get("proposal")
    return {
        "plan_id": plan_id,
        "symbol": (audit[0]["symbol"] if audit else "") or exec_h.get("symbol"),
        "plan": plan,
        "proposal": proposal,
        "steps": story(audit, exec_h),
        "exec": {k_: v for k_, v in exec_h.items() if k_ not in ("gov_permit", "p33_permit")},
        "result": result,
        "permits_now": await permits_of(r, k, plan_id),
        "outcome": (result or {}).get("status")
        or exec_h.get("state")
        or (origin["decision"] if origin else "unknown"),
    }
