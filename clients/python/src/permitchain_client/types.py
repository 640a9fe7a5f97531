"""What the client returns: small frozen dataclasses, money as Decimal."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class Result:
    """A plan's one result (``quantum:stream:apply.result``), or ``status="skipped"`` when
    the planner decided SKIP (``reason``: its reason code) and no plan ran.

    ``status``: filled, partially_filled, rejected, blocked, unknown, dry_run or skipped.
    """

    plan_id: str
    symbol: str
    status: str
    reason: str
    executed: bool
    side: str
    client_order_id: str
    order_id: str
    requested_qty: Decimal
    filled_qty: Decimal
    avg_price: Decimal | None
    error: str
    ts: float


class ClaimVerdict(StrEnum):
    """What ``Gate.claim`` found (only ``OK`` lets the bot send its order)."""

    OK = "ok"  #: the grant is yours: send the order with its quantity and client order id
    NOT_READY = "not_ready"  #: the chain has not decided yet (claim waits for this to change)
    ALREADY_EXECUTED = "already_executed"  #: claimed before, or ended: never send again
    BLOCKED = "blocked"  #: the plan ended without an order (``reason``: the code)
    DRY_RUN = "dry_run"  #: the chain runs in dry_run mode: nothing may be sent
    GRANT_EXPIRED = "grant_expired"  #: not claimed before grant_expires_at
    TRADING_HALTED = "trading_halted"  #: the kill switch is on: not claimed
    NOT_EXTERNAL = "not_external"  #: the plan is for permitchain's own executor
    MISMATCH = "mismatch"  #: the exec record is not this plan's (by value): refused
    TIMEOUT = "timeout"  #: no decision within the claim's timeout (client side)


@dataclass(frozen=True, slots=True)
class Claim:
    plan_id: str
    verdict: ClaimVerdict
    state: str  #: the plan's exec state after the claim
    side: str  #: BUY or SELL (when granted)
    qty: Decimal | None  #: the approved quantity: send exactly this
    client_order_id: str  #: send the order with this client order id
    reason: str = ""  #: why not: a reason code (blocked: the plan's, e.g. p33_denied)
    detail: str = ""  #: more on it (blocked: the gatekeeper's own reason, e.g. cooldown_in_flight)

    @property
    def ok(self) -> bool:
        return self.verdict is ClaimVerdict.OK


@dataclass(frozen=True, slots=True)
class Report:
    """What ``Gate.report`` did: ``accepted`` when it wrote the plan's one result."""

    plan_id: str
    accepted: bool
    state: str  #: the plan's exec state after the report
    result_id: str = ""  #: the result's entry id (when accepted)
    reason: str = ""  #: why refused: not_claimed, already_reported, mismatch


@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: str
    plan_id: str
    symbol: str
    layer: str
    decision: str
    reason: str
    context: dict[str, object] = field(default_factory=dict)
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything the chain recorded about one plan: its exec record and audit entries."""

    plan_id: str
    state: str
    exec_record: dict[str, str]
    audit: tuple[AuditEntry, ...]
