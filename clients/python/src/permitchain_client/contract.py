"""The parts of permitchain's contract the client writes and reads, with no I/O: key names,
values, the schema check, proposals (messages.py: results, audit entries, claims, reports).

Key names, the proposal's fields, the plan id's derivation, the result's fields and the
heartbeat's ``schema`` are permitchain's (its ``keys.py``, ``models.py`` and
docs/design.md §15); the client's tests check each against the chain itself.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from permitchain_client.errors import ChainUnavailable, ContractError, SchemaMismatch
from permitchain_client.types import TradingState

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


#: Redis Cluster hash slots; permitchain's largest STREAM_SHARDS.
SLOTS = 16384
MAX_SHARDS = 256


@functools.cache
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of the result stream's shard ``shard`` of ``shards`` (permitchain's
    ``keys.shard_tag``): the first of ``s<shard>.0``, ``s<shard>.1``, … whose CRC16
    (XMODEM) slot lies in ``[shard·16384/shards, (shard+1)·16384/shards)``."""
    low, high = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
    n = 0
    while not low <= binascii.crc_hqx(f"s{shard}.{n}".encode(), 0) % SLOTS < high:
        n += 1
    return f"s{shard}.{n}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (permitchain's ``KEY_PREFIX``, default ``quantum``). The
    result stream is split into ``shards`` by symbol (the chain's ``STREAM_SHARDS``, read
    from its heartbeats: :func:`check_heartbeats`)."""

    prefix: str = "quantum"
    shards: int = 1

    def proposal(self, symbol: str) -> str:
        return f"{self.prefix}:harvest:proposal:{symbol}"

    @property
    def proposal_stream(self) -> str:
        return f"{self.prefix}:stream:harvest.proposal"

    def exec_record(self, plan_id: str) -> str:
        return f"{self.prefix}:exec:{{{plan_id}}}"

    @property
    def result_stream(self) -> str:
        """The result stream of an unsharded chain (see :meth:`result_stream_for`)."""
        if self.shards != 1:
            raise ContractError(f"the chain has {self.shards} result streams: name the symbol")
        return f"{self.prefix}:stream:apply.result"

    def shard_of(self, symbol: str) -> int:
        """A symbol's shard: ``crc32(symbol) % shards`` (as the chain computes it)."""
        return binascii.crc32(symbol.encode()) % self.shards if self.shards > 1 else 0

    def result_stream_shard(self, shard: int) -> str:
        base = f"{self.prefix}:stream:apply.result"
        return base if self.shards == 1 else f"{base}:{{{shard_tag(shard, self.shards)}}}"

    def result_stream_for(self, symbol: str) -> str:
        """The result stream a symbol's results are written to."""
        return self.result_stream_shard(self.shard_of(symbol))

    @property
    def result_streams(self) -> tuple[str, ...]:
        return tuple(self.result_stream_shard(i) for i in range(self.shards))

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


def check_stream_shards(raw: dict[str, str | None], expected: int | None = None) -> int:
    """The chain's ``STREAM_SHARDS`` from its services' heartbeats (``stream_shards``; a
    heartbeat without it: 1, an unsharded chain). Raises :class:`SchemaMismatch` when the
    services disagree, or when the client was told ``expected`` and the chain says another:
    a client writing or following the wrong result streams would miss results."""
    declared: dict[str, object] = {}
    for service, value in raw.items():
        if value is None:
            continue
        try:
            hb = json.loads(value)
        except json.JSONDecodeError:
            raise ContractError(f"{service} heartbeat: not JSON") from None
        declared[service] = hb.get("stream_shards", 1) if isinstance(hb, dict) else None
    for service, n in sorted(declared.items()):
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SHARDS:
            raise SchemaMismatch(f"the chain's {service} declares stream_shards {n!r}")
    counts = set(declared.values())
    if len(counts) > 1:
        named = ", ".join(f"{s} {n}" for s, n in sorted(declared.items()))
        raise SchemaMismatch(f"the chain's services disagree on STREAM_SHARDS ({named})")
    shards = int(str(counts.pop())) if counts else 1
    if expected is not None and expected != shards:
        raise SchemaMismatch(
            f"stream_shards={expected} was given, but the chain runs STREAM_SHARDS={shards}"
        )
    return shards


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
