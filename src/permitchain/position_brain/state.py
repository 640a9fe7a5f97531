"""P3.3's Redis state: exchange snapshots, the shadow ledger, reconcile.

The ledger is written by the position brain only. Each result is applied once: results are
applied in stream order and a result whose stream id is not above ``last_result_id`` is a
repeat (WATCH/MULTI on the ledger key makes the read-compute-write atomic, with Decimal
arithmetic). Only confirmed fills change the amount; any order sent sets the cooldown clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from permitchain.exchange.base import PositionInfo, SymbolFilters
from permitchain.keys import Keys
from permitchain.models import Result, ResultStatus, fmt_decimal
from permitchain.position_brain.checks import Ledger, Snapshot, side_of
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields

SNAPSHOT_TTL_S = 3600
LAYER = "position-brain"
#: Results that mean an order reached the exchange (cooldown starts).
ORDER_SENT = {ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED, ResultStatus.UNKNOWN,
              ResultStatus.REJECTED}  # fmt: skip


def _dec(v: str | None) -> Decimal | None:
    if v is None or v == "":
        return None
    try:
        d = Decimal(v)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None  # type: ignore[arg-type]
    except ValueError:
        return None


def snapshot_fields(p: PositionInfo, f: SymbolFilters, ts: float, source: str) -> dict[str, str]:
    return {
        "position_amt": fmt_decimal(p.amt), "side": p.side,
        "entry_price": fmt_decimal(p.entry_price), "mark_price": fmt_decimal(p.mark_price),
        "leverage": fmt_decimal(p.leverage), "unrealized_pnl": fmt_decimal(p.unrealized_pnl),
        "step_size": fmt_decimal(f.step_size), "min_qty": fmt_decimal(f.min_qty),
        "ts_epoch": f"{ts:.6f}", "ts_iso": datetime.fromtimestamp(ts, UTC).isoformat(),
        "source": source,
    }  # fmt: skip


def parse_snapshot(h: dict[str, str]) -> Snapshot | None:
    """A snapshot with any unreadable field is no snapshot (fail closed)."""
    amt, step, min_qty = (
        _dec(h.get("position_amt")),
        _dec(h.get("step_size")),
        _dec(h.get("min_qty")),
    )
    ts = _float(h.get("ts_epoch"))
    if amt is None or step is None or step <= 0 or min_qty is None or min_qty < 0 or ts is None:
        return None
    return Snapshot(position_amt=amt, ts_epoch=ts, step_size=step, min_qty=min_qty,
                    mark_price=_dec(h.get("mark_price")))  # fmt: skip


def parse_ledger(h: dict[str, str]) -> Ledger | None:
    amt = _dec(h.get("last_known_amt"))
    if amt is None:
        return None
    return Ledger(amt=amt, last_order_time_epoch=_float(h.get("last_order_time_epoch")))


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class LedgerChange:
    applied: bool
    before: Decimal | None
    after: Decimal | None


async def apply_result(r: Redis, keys: Keys, result: Result, result_id: str) -> LedgerChange:
    """Apply one result to the symbol's ledger, once. Returns what changed."""
    key = keys.ledger(result.symbol)
    async with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                h: dict[str, str] = await pipe.hgetall(key)  # type: ignore[misc]
                last = h.get("last_result_id")
                if last and _sid(result_id) <= _sid(last):
                    await pipe.unwatch()
                    return LedgerChange(False, _dec(h.get("last_known_amt")), None)
                before = _dec(h.get("last_known_amt"))
                update = {"last_result_id": result_id, "last_update_ts": f"{time.time():.6f}"}
                after = before
                delta = result.signed_delta
                if delta != 0 and before is not None:
                    after = before + delta
                    update["last_known_amt"] = fmt_decimal(after)
                    update["last_known_side"] = side_of(after)
                if result.status in ORDER_SENT:
                    update["last_order_id"] = result.order_id
                    update["last_order_time_epoch"] = f"{result.ts:.6f}"
                pipe.multi()
                pipe.hset(key, mapping=update)
                await pipe.execute()
                return LedgerChange(True, before, after)
            except WatchError:
                continue


async def init_ledger_if_missing(
    r: Redis, keys: Keys, symbol: str, exchange_amt: Decimal, reason: str = "first_sight"
) -> bool:
    """Initialise a missing ledger from the exchange amount, with an audit entry."""
    key = keys.ledger(symbol)
    created = await r.hsetnx(key, "last_known_amt", fmt_decimal(exchange_amt))  # type: ignore[misc]
    if not created:
        return False
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.hset(key, mapping={"last_known_side": side_of(exchange_amt),
                            "last_update_ts": f"{now:.6f}"})  # fmt: skip
    pipe.hsetnx(key, "epoch", "0")
    pipe.xadd(keys.decisions, audit_fields(
        plan_id="", symbol=symbol, layer=LAYER, decision="LEDGER_INIT", reason=reason,
        context={"ledger_amt": fmt_decimal(exchange_amt), "source": "exchange"}, ts=now,
    ), maxlen=AUDIT_MAXLEN, approximate=True)  # fmt: skip
    await pipe.execute()
    return True


async def reconcile(
    r: Redis, keys: Keys, symbol: str, exchange_amt: Decimal, *, operator: str, note: str,
    dry_run: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Set the ledger to the exchange amount on purpose. Starts a new position epoch, so
    plans made on the old beliefs are never the same plan as the ones made after."""
    key = keys.ledger(symbol)
    h: dict[str, str] = await r.hgetall(key)  # type: ignore[misc]
    before = h.get("last_known_amt")
    epoch = int(h.get("epoch") or 0)
    change = {
        "symbol": symbol, "ledger_before": before, "ledger_after": fmt_decimal(exchange_amt),
        "exchange_amt": fmt_decimal(exchange_amt), "epoch_before": epoch,
        "epoch_after": epoch + 1, "operator": operator, "note": note, "dry_run": dry_run,
    }  # fmt: skip
    if dry_run:
        return change
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.hset(key, mapping={"last_known_amt": fmt_decimal(exchange_amt),
                            "last_known_side": side_of(exchange_amt),
                            "last_update_ts": f"{now:.6f}", "epoch": str(epoch + 1)})  # fmt: skip
    pipe.xadd(keys.decisions, audit_fields(
        plan_id="", symbol=symbol, layer=LAYER, decision="RECONCILE", reason="operator_reconcile",
        context=change, ts=now,
    ), maxlen=AUDIT_MAXLEN, approximate=True)  # fmt: skip
    await pipe.execute()
    return change
