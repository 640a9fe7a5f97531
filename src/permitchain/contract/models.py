"""Messages of the contract (docs/design.md §3) with strict parsing.

Stream entries and permits travel as strings: quantities as decimal strings (parsed to
``Decimal``, never float), booleans as ``true``/``false``, and every message carries
``schema``. Every record is a :class:`Record` whose fields are typed with the parsers here
(``parse_decimal`` the one decimal parser); its ``from_fields`` raises :class:`ContractError`
with the offending field named, and callers dead-letter such entries. Denials are data
(``decision``/``reason``), not errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from permitchain.contract.errors import ContractError, SchemaError
from permitchain.contract.reasons import INVALID_PROPOSAL, UNKNOWN_ACTION
from permitchain.contract.settings import SYMBOL_RE

SCHEMA = 1
MAX_ABS_DECIMAL = Decimal("1e15")


class Action(StrEnum):
    PARTIAL_25 = "PARTIAL_25"
    PARTIAL_50 = "PARTIAL_50"
    PARTIAL_75 = "PARTIAL_75"
    FULL_CLOSE_PROPOSED = "FULL_CLOSE_PROPOSED"
    UPDATE_SL = "UPDATE_SL"
    HOLD = "HOLD"


#: Exact close fraction of each closing action. PARTIAL_25 is a quarter, never a full close.
CLOSE_FRACTION: dict[Action, Decimal] = {
    Action.PARTIAL_25: Decimal("0.25"),
    Action.PARTIAL_50: Decimal("0.5"),
    Action.PARTIAL_75: Decimal("0.75"),
    Action.FULL_CLOSE_PROPOSED: Decimal("1"),
}
CLOSE_STEP: dict[Action, str] = {
    Action.PARTIAL_25: "CLOSE_PARTIAL_25",
    Action.PARTIAL_50: "CLOSE_PARTIAL_50",
    Action.PARTIAL_75: "CLOSE_PARTIAL_75",
    Action.FULL_CLOSE_PROPOSED: "CLOSE_FULL",
}


def proposal_fault(action: str, new_sl: Decimal | None) -> tuple[str, str] | None:
    """What makes a proposal unplannable whatever the policy, as (reason code, message naming
    the field), or None: an action that is not the contract's, or UPDATE_SL without a
    positive stop price. The planner SKIPs such a proposal with the code; ``propose`` (CLI
    and API) refuses it before it is sent."""
    if action not in Action.__members__:
        known = ", ".join(Action.__members__)
        return UNKNOWN_ACTION, f"action: unknown {action!r} (one of {known})"
    if action == Action.UPDATE_SL and (new_sl is None or new_sl <= 0):
        return INVALID_PROPOSAL, "new_sl: UPDATE_SL needs a positive stop price"
    return None


class PlanDecision(StrEnum):
    EXECUTE = "EXECUTE"
    SKIP = "SKIP"


#: Reserved symbol of ``permitchain proof --canary``; never allowlisted (proof refuses).
CANARY_SYMBOL = "PCCANARY"
#: A canary plan's P3.3 quantity: a nominal size, never sent (the plan is dry_run).
CANARY_SIZE = Decimal("0.001")


class ResultStatus(StrEnum):
    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"
    DRY_RUN = "dry_run"


def parse_decimal(value: Any, name: str, *, max_abs: Decimal | None = MAX_ABS_DECIMAL) -> Decimal:
    """The contract's one decimal parser: a decimal string (or an int, or a Decimal) → Decimal.
    Refuses floats, NaN, infinities and, beyond ``max_abs`` (None: no bound), absurd
    magnitudes, with a ``ValueError`` naming ``name``. Every model field, permit and exec
    record reads its decimals with it."""
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{name}: not a decimal: {value!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        d = Decimal(value)
    else:
        raise ValueError(f"{name}: expected a decimal string, got {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"{name}: not finite: {value!r}")
    if max_abs is not None and abs(d) > max_abs:
        raise ValueError(f"{name}: out of range: {value!r}")
    return d


def decimal_or_none(v: str | None) -> Decimal | None:
    """:func:`parse_decimal` that never raises (and sets no magnitude bound): a finite Decimal,
    or None for a missing or unreadable value (snapshots, ledgers: unreadable is absent)."""
    if v is None or v == "":
        return None
    try:
        return parse_decimal(v, "value", max_abs=None)
    except ValueError:
        return None


def float_or_none(v: str | None) -> float | None:
    """A float, or None for a missing or unreadable value (never raises)."""
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return None


def fmt_decimal(d: Decimal) -> str:
    """Decimal → plain string without exponent (``0.046``, never ``4.6E-2``)."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def fmt_ts(t: float) -> str:
    return f"{t:.6f}"


def iso_utc(t: float) -> str:
    """Epoch seconds as people read them (tables, notes): ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def parse_ts(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected epoch seconds")
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected epoch seconds, got {value!r}") from None
    if not math.isfinite(t) or t < 0 or t > 1e11:
        raise ValueError(f"{name}: out of range: {value!r}")
    return t


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_json(obj: dict[str, Any]) -> str:
    return _canonical(obj)


_PLAN_ID = re.compile("[0-9a-f]{16}")


def _symbol(v: Any) -> str:
    if not isinstance(v, str) or not SYMBOL_RE.match(v):
        raise ValueError(f"not a symbol: {v!r}")
    return v


def _plan_id(v: Any) -> str:
    if not isinstance(v, str) or not _PLAN_ID.fullmatch(v):
        raise ValueError(f"not a plan id (16 hex characters): {v!r}")
    return v


def _decimal(v: Any, info: ValidationInfo) -> Decimal:
    if v is None or v == "":
        raise ValueError("missing")
    return parse_decimal(v, info.field_name or "value")


def _decimal_or_none(v: Any, info: ValidationInfo) -> Decimal | None:
    return None if v is None or v == "" else parse_decimal(v, info.field_name or "value")


def _decimal_or_zero(v: Any, info: ValidationInfo) -> Decimal:
    return Decimal(0) if v is None or v == "" else parse_decimal(v, info.field_name or "value")


def _timestamp(v: Any, info: ValidationInfo) -> float:
    return parse_ts(v, info.field_name or "value")


def _flag(v: Any, info: ValidationInfo) -> bool:
    return parse_bool(v, info.field_name or "value")


def _count(v: Any) -> int:
    if isinstance(v, bool) or not str(v).lstrip("-").isdigit():
        raise ValueError(f"expected an integer, got {v!r}")
    n = int(v)
    if n < 0 or n > 10**12:
        raise ValueError(f"out of range: {v!r}")
    return n


# The field types of the contract's records: each parses the string a Redis hash or a JSON
# permit holds (or the typed value code passes) with the one parser of its kind.
#: A decimal (parse_decimal); "" or absent is ``missing``.
Dec = Annotated[Decimal, BeforeValidator(_decimal)]
#: A decimal, or None for "" (how an absent optional decimal is written).
OptionalDec = Annotated[Decimal | None, BeforeValidator(_decimal_or_none)]
#: A decimal, 0 for "".
DecOrZero = Annotated[Decimal, BeforeValidator(_decimal_or_zero)]


def _unit(v: Decimal) -> Decimal:
    if not (0 <= v <= 1):
        raise ValueError("must be between 0 and 1")
    return v


#: A decimal from 0 to 1 (a kill score, a close fraction).
Fraction = Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_unit)]
#: Epoch seconds (parse_ts).
Timestamp = Annotated[float, BeforeValidator(_timestamp)]
#: ``true`` or ``false`` (parse_bool).
Flag = Annotated[bool, BeforeValidator(_flag)]
#: A non-negative integer (position epoch, tranche).
Count = Annotated[int, BeforeValidator(_count)]
#: A symbol (``SYMBOL_RE``).
Symbol = Annotated[str, BeforeValidator(_symbol)]
#: A plan id: 16 hex characters.
PlanId = Annotated[str, BeforeValidator(_plan_id)]


class Record(BaseModel):
    """Base of every record the chain reads from Redis (stream entries, exec records, permits):
    frozen, no extra fields (unless a record says so). :meth:`from_fields` validates a hash's
    str fields (or a JSON object's values) with the field types above and raises
    :class:`ContractError` naming the record and the first offending field; callers
    dead-letter, deny or block on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    #: The record carries ``schema`` (checked against SCHEMA, then dropped).
    has_schema: ClassVar[bool] = True

    @classmethod
    def from_fields(cls, f: Mapping[str, Any], **known: Any) -> Self:
        """The record in hash (or JSON object) ``f``; ``known``: fields the caller has from
        elsewhere (an exec record's plan id is its key's)."""
        if cls.has_schema:
            cls._check_schema(f.get("schema"))
            data = {k: v for k, v in f.items() if k != "schema"}
        else:
            data = dict(f)
        return cls._validate(data | known)

    @classmethod
    def _check_schema(cls, raw: Any) -> None:
        if raw is None:
            raise ContractError("schema: missing")
        try:
            n = int(raw)
        except (TypeError, ValueError):
            raise ContractError(f"schema: not an integer: {raw!r}") from None
        if n != SCHEMA:
            raise SchemaError(f"schema: unsupported version {n} (this build reads {SCHEMA})")

    @classmethod
    def _where(cls, data: Mapping[str, Any]) -> str:
        """How an error names the record."""
        return cls.__name__

    @classmethod
    def _validate(cls, data: dict[str, Any]) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or cls.__name__
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ContractError(f"{cls._where(data)} {loc}: {msg}") from None


def make_plan_id(symbol: str, action: str, position_epoch: int, tranche: int, *extra: str) -> str:
    """Deterministic plan id from the decision's identity; never from a clock."""
    ident = "|".join([symbol, action, str(position_epoch), str(tranche), *extra])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Proposal
# ---------------------------------------------------------------------------------------
PROPOSAL_FIELDS = (
    "proposal_id",
    "symbol",
    "action",
    "kill_score",
    "k_regime_flip",
    "k_sigma_spike",
    "k_ts_drop",
    "k_age_penalty",
    "new_sl",
    "r_net",
    "position_epoch",
    "tranche",
    "ts_epoch",
    "source",
)
#: Who places a plan's order: permitchain's own executor, or a bot through the gate
#: (docs/design.md §15, "Gate for external executors"). Sent only when not the default.
Executor = Literal["builtin", "external"]
EXECUTOR_BUILTIN: Executor = "builtin"
EXECUTOR_EXTERNAL: Executor = "external"


class Proposal(Record):
    """An exit signal. ``action`` is kept as given: the planner judges an unknown one."""

    proposal_id: str
    symbol: Symbol
    action: str
    kill_score: Fraction
    k_regime_flip: Dec = Decimal(0)
    k_sigma_spike: Dec = Decimal(0)
    k_ts_drop: Dec = Decimal(0)
    k_age_penalty: Dec = Decimal(0)
    new_sl: OptionalDec = None
    r_net: OptionalDec = None
    position_epoch: Count = 0
    tranche: Count = 0
    ts_epoch: Timestamp
    source: str = "exit-brain"
    executor: Executor = EXECUTOR_BUILTIN

    def to_fields(self) -> dict[str, str]:
        out = {"schema": str(SCHEMA)}
        for name in PROPOSAL_FIELDS:
            v = getattr(self, name)
            if v is None:
                out[name] = ""
            elif isinstance(v, Decimal):
                out[name] = fmt_decimal(v)
            elif isinstance(v, float):
                out[name] = fmt_ts(v)
            else:
                out[name] = str(v)
        if self.executor != EXECUTOR_BUILTIN:
            out["executor"] = self.executor
        return out


# ---------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------
class Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    step: Literal[
        "CLOSE_PARTIAL_25", "CLOSE_PARTIAL_50", "CLOSE_PARTIAL_75", "CLOSE_FULL", "UPDATE_SL"
    ]
    type: Literal["market_reduce_only", "stop_market_reduce_only"]
    fraction: OptionalDec = None
    price: OptionalDec = None


class Plan(Record):
    plan_id: PlanId
    symbol: Symbol
    action: str
    decision: PlanDecision
    reason_codes: tuple[str, ...] = ()
    kill_score: OptionalDec = None
    close_fraction: Fraction
    new_sl: OptionalDec = None
    steps: tuple[Step, ...] = ()
    mode: str
    source: str
    proposal_id: str
    proposal_ts: Timestamp
    created_at: Timestamp
    expires_at: Timestamp
    #: An operator's signed emergency-exit request (``source=operator`` plans only; JSON).
    operator_request: str = ""
    executor: Executor = EXECUTOR_BUILTIN

    @field_validator("reason_codes", mode="before")
    @classmethod
    def _codes(cls, v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            return tuple(filter(None, v.split(",")))  # the non-empty codes
        if isinstance(v, list | tuple):
            return tuple(v)
        raise ValueError("expected a comma list")

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise ValueError("not JSON") from None
            if not isinstance(v, list):
                raise ValueError("expected a JSON list")
        return v

    @property
    def is_execute(self) -> bool:
        return self.decision is PlanDecision.EXECUTE

    @property
    def is_canary(self) -> bool:
        """``proof --canary``'s probe: a dry_run plan for the reserved symbol. The executor
        ends every dry_run plan before any order, so granting it can never move money."""
        return self.symbol == CANARY_SYMBOL and self.source == "canary" and self.mode == "dry_run"

    def to_fields(self) -> dict[str, str]:
        steps = [
            {
                k: (fmt_decimal(v) if isinstance(v, Decimal) else v)
                for k, v in s.__dict__.items()  # = model_dump(): plain fields, no nesting
                if v is not None
            }
            for s in self.steps
        ]
        out = {
            "plan_id": self.plan_id,
            "schema": str(SCHEMA),
            "symbol": self.symbol,
            "action": self.action,
            "decision": self.decision.value,
            "reason_codes": ",".join(self.reason_codes),
            "kill_score": "" if self.kill_score is None else fmt_decimal(self.kill_score),
            "close_fraction": fmt_decimal(self.close_fraction),
            "new_sl": "" if self.new_sl is None else fmt_decimal(self.new_sl),
            "steps": json.dumps(steps, separators=(",", ":")),
            "mode": self.mode,
            "source": self.source,
            "proposal_id": self.proposal_id,
            "proposal_ts": fmt_ts(self.proposal_ts),
            "created_at": fmt_ts(self.created_at),
            "expires_at": fmt_ts(self.expires_at),
        } | ({"executor": self.executor} if self.executor != EXECUTOR_BUILTIN else {})
        if self.operator_request:
            out["operator_request"] = self.operator_request
        return out


# ---------------------------------------------------------------------------------------
# Permits (JSON values under TTL'd keys)
# ---------------------------------------------------------------------------------------
class _Permit(Record):
    plan_id: PlanId
    symbol: Symbol
    created_at: Timestamp
    expires_at: Timestamp
    alg: str = ""  # "ed25519" when signed with a public key (signing.py); absent for HMAC
    kid: str = ""  # the signing key's id
    sig: str = ""

    def body(self) -> dict[str, Any]:
        """The permit as a JSON object, without ``sig``."""
        out: dict[str, Any] = {"schema": SCHEMA}
        # the fields in order, as iterating the model gives them (extra fields forbidden)
        for name, value in self.__dict__.items():
            if name == "sig" or (name in ("alg", "kid") and not value):
                continue
            if isinstance(value, Decimal):
                out[name] = fmt_decimal(value)
            elif name in ("created_at", "expires_at"):
                out[name] = fmt_ts(value)
            else:
                out[name] = value
        return out

    def issued(self) -> dict[str, Any]:
        """The permit as written (with ``sig`` when signed): what the audit stream keeps."""
        body = self.body()
        if self.sig:
            body["sig"] = self.sig
        return body

    def to_json(self) -> str:
        return canonical_json(self.issued())

    @classmethod
    def parse_obj(cls, obj: Any) -> Self:
        if not isinstance(obj, dict):
            raise ContractError(f"{cls.__name__}: expected a JSON object")
        return cls.from_fields(obj)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Self:
        return cls.from_json_with_obj(raw)[0]

    @classmethod
    def from_json_with_obj(cls, raw: str | bytes) -> tuple[Self, dict[str, Any]]:
        """The permit, and its JSON object as parsed (for a signature check: JSON parsed once)."""
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ContractError(f"{cls.__name__}: not JSON") from None
        return cls.parse_obj(obj), obj


class GovernorPermit(_Permit):
    decision: Literal["GRANT", "DENY"]
    granted: bool
    reason: str
    computed_qty: OptionalDec = None
    computed_notional: OptionalDec = None
    mode: str
    consumed: bool = False


class P33Allow(_Permit):
    allow: Literal[True] = True
    safe_close_qty: Dec
    side: Literal["LONG", "SHORT"]
    exchange_position_amt: Dec
    ledger_position_amt: Dec
    snapshot_age_sec: Dec

    @field_validator("safe_close_qty")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class P33Deny(_Permit):
    allow: Literal[False] = False
    reason: str
    context: dict[str, Any] = {}


def parse_p33(raw: str | bytes) -> P33Allow | P33Deny:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ContractError("P33 permit: not JSON") from None
    if not isinstance(obj, dict):
        raise ContractError("P33 permit: expected a JSON object")
    allow = obj.get("allow")
    if allow is True:
        return P33Allow.parse_obj(obj)
    if allow is False:
        return P33Deny.parse_obj(obj)
    raise ContractError(f"P33 permit allow: expected true or false, got {allow!r}")


# ---------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------
class Result(Record):
    plan_id: PlanId
    symbol: Symbol
    executed: Flag
    status: ResultStatus
    reason: str = ""
    order_id: str = ""
    client_order_id: str = ""
    side: Literal["BUY", "SELL", ""] = ""
    requested_qty: DecOrZero = Decimal(0)
    filled_qty: DecOrZero = Decimal(0)
    avg_price: OptionalDec = None
    reduce_only: Flag = True
    error: str = ""
    permit_wait_ms: DecOrZero = Decimal(0)
    chain_latency_ms: DecOrZero = Decimal(0)
    ts: Timestamp

    @field_validator("filled_qty", "requested_qty")
    @classmethod
    def _nonneg(cls, v: Decimal) -> Decimal:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    def to_fields(self) -> dict[str, str]:
        out = {"schema": str(SCHEMA)}
        # the fields in order, as iterating the model gives them (extra fields forbidden)
        for name, v in self.__dict__.items():
            if v is None:
                out[name] = ""
            elif isinstance(v, bool):
                out[name] = "true" if v else "false"
            elif isinstance(v, Decimal):
                out[name] = fmt_decimal(v)
            elif isinstance(v, float):
                out[name] = fmt_ts(v)
            else:
                out[name] = str(v)
        return out

    @property
    def signed_delta(self) -> Decimal:
        """Change of the signed position this result confirms (0 unless something filled)."""
        if self.status not in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED):
            return Decimal(0)
        return self.filled_qty if self.side == "BUY" else -self.filled_qty
