"""P3.3's exchange snapshot and shadow ledger as their readers see them (docs/design.md §2, §5).

The position brain writes both hashes; the governor (quantity and notional of a plan), P3.3's
checks, ``status`` and the flatten command read them with these parsers. A snapshot with any
unreadable field is no snapshot, and a ledger without a readable amount is no ledger: the
readers then decide on "unknown", never on a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from permitchain.contract.models import decimal_or_none, float_or_none


@dataclass(frozen=True, slots=True)
class Snapshot:
    position_amt: Decimal  # signed
    ts_epoch: float
    step_size: Decimal
    min_qty: Decimal
    mark_price: Decimal | None = None
    resting_reduce_qty: Decimal = Decimal(0)  # reduce-only orders resting on the closing side


@dataclass(frozen=True, slots=True)
class Ledger:
    amt: Decimal  # signed
    last_order_time_epoch: float | None = None


def parse_snapshot(h: Mapping[str, str]) -> Snapshot | None:
    """A snapshot with any unreadable field is no snapshot (fail closed)."""
    amt, step = decimal_or_none(h.get("position_amt")), decimal_or_none(h.get("step_size"))
    min_qty = decimal_or_none(h.get("min_qty"))
    ts = float_or_none(h.get("ts_epoch"))
    resting = decimal_or_none(h.get("resting_reduce_qty") or "0")
    if amt is None or step is None or step <= 0 or min_qty is None or min_qty < 0 or ts is None:
        return None
    if resting is None or resting < 0:
        return None
    return Snapshot(
        position_amt=amt,
        ts_epoch=ts,
        step_size=step,
        min_qty=min_qty,
        mark_price=decimal_or_none(h.get("mark_price")),
        resting_reduce_qty=resting,
    )


def parse_ledger(h: Mapping[str, str]) -> Ledger | None:
    """The ledger's amount and last order time; None when the amount is absent or unreadable."""
    amt = decimal_or_none(h.get("last_known_amt"))
    if amt is None:
        return None
    return Ledger(amt=amt, last_order_time_epoch=float_or_none(h.get("last_order_time_epoch")))
