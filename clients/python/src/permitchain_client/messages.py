"""Messages the client reads (results, audit entries, claim replies) and writes (a gate
report and its audit entry), with no I/O; field for field as the chain writes them."""

from __future__ import annotations

import json
from decimal import Decimal

from permitchain_client.contract import (
    REPORT_STATUSES,
    SCHEMA,
    SCHEMAS,
    decimal,
    fmt_decimal,
)
from permitchain_client.errors import ContractError, SchemaMismatch
from permitchain_client.types import (
    AuditEntry,
    Claim,
    ClaimVerdict,
    Explanation,
    Result,
)


def parse_result(fields: dict[str, str]) -> Result:
    schema = fields.get("schema")
    if schema is None or not schema.isdigit() or int(schema) not in SCHEMAS:
        raise SchemaMismatch(
            f"result of plan {fields.get('plan_id')!r} has schema "
            f"{schema!r}; this client speaks {sorted(SCHEMAS)}"
        )
    try:
        return Result(
            plan_id=fields["plan_id"],
            symbol=fields["symbol"],
            status=fields["status"],
            reason=fields.get("reason", ""),
            executed=fields["executed"] == "true",
            side=fields.get("side", ""),
            client_order_id=fields.get("client_order_id", ""),
            order_id=fields.get("order_id", ""),
            requested_qty=decimal(fields.get("requested_qty") or "0", "requested_qty"),
            filled_qty=decimal(fields.get("filled_qty") or "0", "filled_qty"),
            avg_price=decimal(fields["avg_price"], "avg_price")
            if fields.get("avg_price")
            else None,
            error=fields.get("error", ""),
            ts=float(fields["ts"]),
        )
    except (KeyError, ValueError) as e:
        raise ContractError(f"result of plan {fields.get('plan_id')!r}: {e}") from None


def skipped_result(entry: AuditEntry) -> Result:
    """A proposal the planner decided SKIP: no plan runs, so this is its outcome."""
    return Result(
        plan_id=entry.plan_id,
        symbol=entry.symbol,
        status="skipped",
        reason=entry.reason,
        executed=False,
        side="",
        client_order_id="",
        order_id="",
        requested_qty=Decimal(0),
        filled_qty=Decimal(0),
        avg_price=None,
        error="",
        ts=entry.ts,
    )


def parse_audit(entry_id: str, f: dict[str, str]) -> AuditEntry:
    try:
        context = json.loads(f.get("context") or "{}")
    except json.JSONDecodeError:
        context = {"raw": f.get("context", "")}
    try:
        ts = float(f.get("ts") or 0)
    except ValueError:
        ts = 0.0
    return AuditEntry(
        entry_id=entry_id,
        plan_id=f.get("plan_id", ""),
        symbol=f.get("symbol", ""),
        layer=f.get("layer", ""),
        decision=f.get("decision", ""),
        reason=f.get("reason", ""),
        context=context if isinstance(context, dict) else {"value": context},
        ts=ts,
    )


def explanation(plan_id: str, audit: list[AuditEntry], record: dict[str, str]) -> Explanation:
    return Explanation(
        plan_id=plan_id,
        state=record.get("state", ""),
        exec_record=record,
        audit=tuple(sorted(audit, key=lambda e: e.ts)),
    )


def parse_claim(plan_id: str, reply: list[object]) -> Claim:
    """``gate_claim.lua``'s reply → :class:`Claim` (a denial is data, not an error)."""
    verdict, state, side, qty, coid, reason, detail = (str(x) for x in reply)
    if verdict not in ClaimVerdict.__members__.values():
        raise ContractError(f"claim of {plan_id}: unknown verdict {verdict!r}")
    return Claim(
        plan_id=plan_id,
        verdict=ClaimVerdict(verdict),
        state=state,
        side=side,
        qty=decimal(qty, "qty") if qty else None,
        client_order_id=coid,
        reason=reason,
        detail=detail,
    )


def report_fields(
    record: dict[str, str],
    *,
    status: str,
    filled_qty: object,
    avg_price: object | None,
    order_id: str,
    now: float,
) -> tuple[dict[str, str], str]:
    """The plan's one result as the executor writes it, from its exec record and the bot's
    report; returns (result fields, exec state to move to). Raises ContractError on a bad
    report (nothing is written)."""
    if status not in REPORT_STATUSES:
        raise ContractError(
            f"status: {status!r} is not one of {', '.join(REPORT_STATUSES)} "
            "(an order whose outcome you do not know: do not report; the "
            "resolver looks it up by client order id)"
        )
    filled = decimal(filled_qty, "filled_qty")
    qty = decimal(record.get("qty") or "0", "qty")
    if filled < 0 or filled > qty:
        raise ContractError(
            f"filled_qty: {fmt_decimal(filled)} is outside 0..{fmt_decimal(qty)} "
            "(the granted quantity)"
        )
    if status == "rejected" and filled != 0:
        raise ContractError("filled_qty: a rejected order filled nothing")
    if status in ("filled", "partially_filled") and filled <= 0:
        raise ContractError(f"filled_qty: status {status} needs a quantity above 0")
    price = decimal(avg_price, "avg_price") if avg_price not in (None, "") else None
    if price is not None and price <= 0:
        raise ContractError("avg_price: must be above 0")
    if not isinstance(order_id, str) or len(order_id) > 128:
        raise ContractError("order_id: a string of at most 128 characters")
    try:
        proposal_ts = float(record.get("proposal_ts") or now)
    except ValueError:
        proposal_ts = now
    executed = status != "rejected"
    fields = {
        "schema": str(SCHEMA),
        "plan_id": record["plan_id"],
        "symbol": record["symbol"],
        "executed": "true" if executed else "false",
        "status": status,
        "reason": "ok" if executed else "exchange_rejected",
        "order_id": order_id,
        "client_order_id": record.get("client_order_id", ""),
        "side": record.get("side", ""),
        "requested_qty": fmt_decimal(qty),
        "filled_qty": fmt_decimal(filled),
        "avg_price": "" if price is None else fmt_decimal(price),
        "reduce_only": "true",
        "error": "",
        "permit_wait_ms": record.get("permit_wait_ms") or "0",
        "chain_latency_ms": str(max(0, round((now - proposal_ts) * 1000))),
        "ts": f"{now:.6f}",
    }
    return fields, "filled" if executed else "rejected"


def audit_of_report(fields: dict[str, str], reporter: str) -> dict[str, str]:
    """The report's audit entry, shaped as the executor's result entries."""
    context = {
        "result": fields,
        "client_order_id": fields["client_order_id"],
        "reported_by": reporter,
        "gate": "report",
    }
    executed = fields["executed"] == "true"
    return {
        "plan_id": fields["plan_id"],
        "symbol": fields["symbol"],
        "layer": "executor",
        "decision": "EXECUTED" if executed else fields["status"].upper(),
        "reason": fields["reason"],
        "context": json.dumps(context, separators=(",", ":")),
        "ts": fields["ts"],
    }


def flat(mapping: dict[str, str]) -> list[str]:
    out = [str(len(mapping) * 2)]
    for k, v in mapping.items():
        out += [k, v]
    return out
