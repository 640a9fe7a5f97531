"""Rate windows and reservations of the production policy, as pure functions.

Per symbol, the governor keeps *confirmed executions* (from the result stream, at the result's
timestamp) and *reservations* (taken atomically when it grants a permit; each expires at
``grant time + PERMIT_TTL_SECONDS + APPLY_PERMIT_WAIT_MS``). A count is confirmed executions in
the window plus live reservations, so a burst of grants cannot outrun the results.

Edges: an execution at ``t`` is in a window of ``w`` seconds at ``now`` while ``now - w < t``:
exactly 300 s (or 3600 s) old, it has left. A reservation is live while ``now < expires_at``.
``governor_reserve.lua`` applies the same rules atomically on the server; tests hold both to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from permitchain.contract.models import ResultStatus

WINDOW_5MIN_S = 300
WINDOW_HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class RateCounts:
    """Executions of one symbol in each window, live reservations included."""

    last_5min: int = 0
    last_hour: int = 0
    reserved: int = 0


def count_windows(
    executed_at: Iterable[float], reservation_expiries: Iterable[float], now: float
) -> RateCounts:
    executed = list(executed_at)
    live = sum(1 for e in reservation_expiries if e > now)
    in_5min = sum(1 for t in executed if t > now - WINDOW_5MIN_S)
    in_hour = sum(1 for t in executed if t > now - WINDOW_HOUR_S)
    return RateCounts(last_5min=in_5min + live, last_hour=in_hour + live, reserved=live)


def reservation_ttl_s(permit_ttl_s: float, permit_wait_ms: float) -> float:
    """A reservation outlives the permit by the executor's wait: after that, nothing can
    consume the permit, so an unused slot is free again."""
    return permit_ttl_s + permit_wait_ms / 1000


class Settlement(StrEnum):
    CONFIRM = "confirm"  # count it: the order was placed (or may have been)
    RELEASE = "release"  # free the slot: nothing reached the exchange


def settlement(status: ResultStatus) -> Settlement:
    """What a result does to the plan's reservation. ``unknown`` counts as executed: the
    order may exist, and the rate limit fails closed."""
    if status in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED, ResultStatus.UNKNOWN):
        return Settlement.CONFIRM
    return Settlement.RELEASE


class ReservationBook:
    """In-memory model of one symbol's store, with the script's rules (for tests and docs)."""

    def __init__(self) -> None:
        self.executed: dict[str, float] = {}
        self.reserved: dict[str, float] = {}

    def counts(self, now: float) -> RateCounts:
        return count_windows(self.executed.values(), self.reserved.values(), now)

    def reserve(self, plan_id: str, now: float, ttl_s: float, max_5min: int, max_hour: int) -> str:
        self.reserved = {p: e for p, e in self.reserved.items() if e > now}
        c = self.counts(now)
        if plan_id in self.reserved or plan_id in self.executed:
            return "already"
        if c.last_5min >= max_5min:
            return "rate_limit_5min"
        if c.last_hour >= max_hour:
            return "rate_limit_hour"
        self.reserved[plan_id] = now + ttl_s
        return "reserved"

    def settle(self, plan_id: str, status: ResultStatus, ts: float) -> Settlement:
        s = settlement(status)
        self.reserved.pop(plan_id, None)
        if s is Settlement.CONFIRM:
            self.executed[plan_id] = ts
        return s
