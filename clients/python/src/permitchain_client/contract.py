"""The parts of permitchain's contract the client writes and reads, with no I/O.

Key names, the proposal's fields, the plan id's derivation, the result's fields and the
heartbeat's ``schema`` are permitchain's (its ``keys.py``, ``models.py`` and
docs/contract.md); the client's tests check each against the chain itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from permitchain_client.errors import ChainUnavailable, ContractError, SchemaMismatch
from permitchain_client.types import (
    AuditEntry,
    Claim,
    ClaimVerdict,
    Explanation,
    Result,
    TradingState,
)

#: Contract schema versions this client speaks. The package's major version is the newest.
SCHEMAS = frozenset({1})
SCHEMA = max(SCHEMAS)
CLIENT_VERSION = "1.0.0"

ACTIONS = ("PARTIAL_25", "PARTIAL_50", "PARTIAL_75", "FULL_CLOSE_PROPOSED", "UPDATE_SL", "HOLD")
CLOSING_ACTIONS = ("PARTIAL_25", "PARTIAL_50", "PARTIAL_75", "FULL_CLOSE_PROPOSED")
EXECUTORS = ("builtin", "external")
SERVICES = ("apply-layer", "governor", "position-brain", "exit-brain")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,32}$")
PLAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
PROPOSAL_STREAM_MAXLEN = 100_000
RESULT_MAXLEN = 100_000
AUDIT_MAXLEN = 500_000
MAX_TRANCHE = 10**12
#: Result statuses a bot may report through the gate (an order it cannot tell the outcome
#: of is left to the resolver, which looks it up by client order id).
REPORT_STATUSES = ("filled", "partially_filled", "rejected")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (permitchain's ``KEY_PREFIX``, default ``quantum``)."""

    prefix: str = "quantum"

    def proposal(self, symbol: str) -> str:
        return f"{self.prefix}:harvest:proposal:{symbol}"

    @property
    def proposal_stream(self) -> str:
        return f"{self.prefix}:stream:harvest.proposal"

    def exec_record(self, plan_id: str) -> str:
        return f"{self.prefix}:exec:{{{plan_id}}}"

    @property
    def result_stream(self) -> str:
        return f"{self.prefix}:stream:apply.result"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}:stream:decisions"

    @property
    def open_index(self) -> str:
        return f"{self.prefix}:apply:exec_open"

    def ledger(self, symbol: str) -> str:
        return f"{self.prefix}:position:ledger:{symbol}"

    @property
    def trading_state(self) -> str:
        return f"{self.prefix}:trading_state"

    def heartbeat(self, service: str) -> str:
        return f"{self.prefix}:svc:{service}:heartbeat"


# -- values ------------------------------------------------------------------------------
def decimal(value: object, name: str) -> Decimal:
    """A decimal from a string, int or Decimal; never a float (money is exact)."""
    if isinstance(value, bool | float):
        raise ContractError(f"{name}: pass a decimal string or Decimal, not {value!r}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ContractError(f"{name}: not a decimal: {value!r}") from None
    if not d.is_finite():
        raise ContractError(f"{name}: not finite: {value!r}")
    return d


def fmt_decimal(d: Decimal) -> str:
    """Plain decimal string without exponent, as the chain writes them."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def plan_id_of(symbol: str, action: str, epoch: int, tranche: int, executor: str) -> str:
    """The id the planner gives the proposal's plan when it decides EXECUTE."""
    ident = [symbol, action, str(epoch), str(tranche)]
    if executor == "external":
        ident.append("external")
    return hashlib.sha256("|".join(ident).encode()).hexdigest()[:16]


def check_plan_id(plan_id: str) -> str:
    if not isinstance(plan_id, str) or not PLAN_ID_RE.match(plan_id):
        raise ContractError(f"not a plan id (16 hex characters): {plan_id!r}")
    return plan_id


# -- schema ------------------------------------------------------------------------------
def check_heartbeats(prefix: str, raw: dict[str, str | None]) -> int:
    """The chain's schema from its services' heartbeats (``service -> JSON or None``);
    raises when it is absent or one this client does not speak (naming both)."""
    declared: dict[str, object] = {}
    for service, value in raw.items():
        if value is None:
            continue
        try:
            hb = json.loads(value)
        except json.JSONDecodeError:
            raise ContractError(f"{service} heartbeat: not JSON") from None
        declared[service] = hb.get("schema") if isinstance(hb, dict) else None
    if "apply-layer" not in declared:
        raise ChainUnavailable(
            f"no apply-layer heartbeat under KEY_PREFIX={prefix!r}: is the chain running "
            "(permitchain up), and is the key prefix right?"
        )
    speaks = ", ".join(str(s) for s in sorted(SCHEMAS))
    for service, schema in sorted(declared.items()):
        if schema is None:
            raise SchemaMismatch(
                f"the chain's {service} declares no schema; permitchain-client "
                f"{CLIENT_VERSION} speaks schema {speaks}"
            )
        if not isinstance(schema, int) or schema not in SCHEMAS:
            raise SchemaMismatch(
                f"the chain's {service} speaks schema {schema}; permitchain-client "
                f"{CLIENT_VERSION} speaks schema {speaks}"
            )
    return int(str(declared["apply-layer"]))


# -- proposals ---------------------------------------------------------------------------
def proposal_fields(
    symbol: str,
    action: str,
    *,
    kill_score: object,
    epoch: int,
    tranche: int,
    new_sl: object | None,
    r_net: object | None,
    source: str,
    executor: str,
    now: float | None = None,
) -> dict[str, str]:
    """A proposal's stream fields, checked as the planner checks them (one clear error)."""
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol):
        raise ContractError(f"symbol: not a symbol: {symbol!r} (expected e.g. BTCUSDT)")
    if action not in ACTIONS:
        raise ContractError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    if executor not in EXECUTORS:
        raise ContractError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "external" and action not in CLOSING_ACTIONS:
        raise ContractError(
            f"executor=external: {action} closes nothing (one of {', '.join(CLOSING_ACTIONS)})"
        )
    score = decimal(kill_score, "kill_score")
    if not Decimal(0) <= score <= Decimal(1):
        raise ContractError(f"kill_score: must be between 0 and 1, got {kill_score!r}")
    if isinstance(tranche, bool) or not isinstance(tranche, int) or not 0 <= tranche <= MAX_TRANCHE:
        raise ContractError(f"tranche: an integer from 0 to {MAX_TRANCHE}, got {tranche!r}")
    stop = decimal(new_sl, "new_sl") if new_sl is not None else None
    if action == "UPDATE_SL" and (stop is None or stop <= 0):
        raise ContractError("new_sl: UPDATE_SL needs a positive stop price")
    if not isinstance(source, str) or not 0 < len(source) <= 64:
        raise ContractError(f"source: 1 to 64 characters, got {source!r}")
    fields = {
        "schema": str(SCHEMA),
        "proposal_id": uuid.uuid4().hex[:16],
        "symbol": symbol,
        "action": action,
        "kill_score": fmt_decimal(score),
        "k_regime_flip": "0",
        "k_sigma_spike": "0",
        "k_ts_drop": "0",
        "k_age_penalty": "0",
        "new_sl": "" if stop is None else fmt_decimal(stop),
        "r_net": "" if r_net is None else fmt_decimal(decimal(r_net, "r_net")),
        "position_epoch": str(epoch),
        "tranche": str(tranche),
        "ts_epoch": f"{time.time() if now is None else now:.6f}",
        "source": source,
    }
    if executor != "builtin":
        fields["executor"] = executor
    return fields


def parse_epoch(raw: str | None) -> int:
    """P3.3's ledger ``epoch`` field; absent or malformed → 0 (as the chain reads it)."""
    return int(raw) if raw and raw.isdigit() else 0


def parse_trading_state(raw: object) -> TradingState:
    """Absent → ACTIVE; anything but the three names → HALTED (fail-closed, as the chain)."""
    if raw is None:
        return TradingState.ACTIVE
    if isinstance(raw, str) and raw in TradingState.__members__:
        return TradingState(raw)
    return TradingState.HALTED


# -- results, audit, claims --------------------------------------------------------------
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
