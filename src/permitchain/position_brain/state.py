"""P3.3's Redis state: exchange snapshots, the shadow ledger, reconcile.

The ledger (``quantum:position:ledger:<SYMBOL>``) is written by the position brain only.

* Each result is applied once, per plan: each plan applied is a field of the ledger hash
  itself (``applied:<plan_id>`` = when), read and written in the same compare-and-set step as
  the amount (``ledger_apply.lua``), so applying a result costs the same however many came
  before. The same entry delivered twice, or the same plan's result arriving again under a
  new stream id, changes nothing. Deltas commute, so results reclaimed out of stream order
  still add up. At most ``APPLIED_PLANS_MAX`` are kept: past that by ``APPLIED_PRUNE_SLACK``,
  the oldest (and any older than ``APPLIED_PLANS_TTL_S``) are deleted, one pass per
  ``APPLIED_PRUNE_SLACK`` results. A ledger written by an earlier version keeps its JSON
  field ``applied_plans`` (``{plan_id: ts}``): still honoured, never written again.
* Only confirmed fills (``filled``/``partially_filled`` with ``filled_qty`` > 0) change the
  amount, by the signed fill (SELL reduces a long, BUY a short), in ``Decimal``.
* Any order that reached the exchange (filled, partially filled, rejected, unknown) sets
  ``last_order_time_epoch`` (never backwards) for the cooldown. ``blocked`` and ``dry_run``
  results sent no order: they leave the ledger alone.
* A ledger missing at first sight of a position is initialised from the exchange amount, with
  a ``LEDGER_INIT`` audit entry; ``reconcile`` sets it to the exchange amount on purpose
  (``RECONCILE``, new position epoch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from permitchain.contract.keys import Keys
from permitchain.contract.models import (
    Result,
    ResultStatus,
    decimal_or_none,
    float_or_none,
    fmt_decimal,
)
from permitchain.exchange.base import PositionInfo, SymbolFilters
from permitchain.position_brain.checks import side_of
from permitchain.runtime.audit import add_audit, audit_fields
from permitchain.store import AsyncRedis
from permitchain.store.steps import LedgerDecide, LedgerWrite, steps_for

T = TypeVar("T")
SNAPSHOT_TTL_S = 3600
APPLIED_PLANS_TTL_S = 7 * 86400  # as long as the executor keeps a plan's exec record
APPLIED_PLANS_MAX = 1000
#: Applied-plan fields beyond APPLIED_PLANS_MAX tolerated before a prune pass.
APPLIED_PRUNE_SLACK = 100
#: A ledger hash field per applied plan: ``applied:<plan_id>`` = when it was applied.
APPLIED_PREFIX = "applied:"
#: Earlier versions' once-per-plan guard: one JSON field ``{plan_id: ts}`` (read only now).
LEGACY_APPLIED = "applied_plans"
#: Ledger fields that are not applied plans (an upper bound, for the prune threshold).
LEDGER_OTHER_FIELDS = 16
LAYER = "position-brain"
#: Results that mean an order reached the exchange (the cooldown starts).
ORDER_SENT = frozenset(
    {
        ResultStatus.FILLED,
        ResultStatus.PARTIALLY_FILLED,
        ResultStatus.UNKNOWN,
        ResultStatus.REJECTED,
    }
)


def snapshot_fields(
    symbol: str,
    p: PositionInfo | None,
    f: SymbolFilters,
    ts: float,
    source: str,
    ts_iso: str | None = None,
    resting: Decimal = Decimal(0),
) -> dict[str, str]:
    """A snapshot hash. ``p`` None: the exchange answered and holds no position (amount 0).
    ``ts_iso``: ``ts`` as ISO 8601, when the caller formatted it once for a whole poll.
    ``resting``: reduce-only quantity resting on the closing side (``resting_reduce_qty``)."""
    zero = Decimal(0)
    amt = p.amt if p is not None else zero
    return {
        "symbol": symbol,
        "position_amt": fmt_decimal(amt),
        "side": side_of(amt),
        "entry_price": fmt_decimal(p.entry_price if p else zero),
        "mark_price": fmt_decimal(p.mark_price if p else zero),
        "leverage": fmt_decimal(p.leverage if p else Decimal(1)),
        "unrealized_pnl": fmt_decimal(p.unrealized_pnl if p else zero),
        "step_size": fmt_decimal(f.step_size),
        "min_qty": fmt_decimal(f.min_qty),
        "ts_epoch": f"{ts:.6f}",
        "ts_iso": ts_iso or datetime.fromtimestamp(ts, UTC).isoformat(),
        "source": source,
        "resting_reduce_qty": fmt_decimal(resting),
    }


#: The ledger fields :func:`parse_ledger` reads (what judging a plan needs of the ledger),
#: and the epoch: what readers of a ledger need, without its applied-plan marks.
LEDGER_CHECK_FIELDS = ("last_known_amt", "last_order_time_epoch", "epoch")


def ledger_fields(
    values: Sequence[str | None], fields: Sequence[str] = LEDGER_CHECK_FIELDS
) -> dict[str, str]:
    """An HMGET of ``fields`` as a hash (absent fields left out)."""
    return {f: v for f, v in zip(fields, values, strict=True) if v is not None}


async def read_ledger_fields(r: AsyncRedis, keys: Keys, symbol: str) -> dict[str, str]:
    """The symbol's ledger fields ``LEDGER_CHECK_FIELDS`` (one HMGET)."""
    return ledger_fields(await r.hmget(keys.ledger(symbol), LEDGER_CHECK_FIELDS))


def applied_field(plan_id: str) -> str:
    return APPLIED_PREFIX + plan_id


def _in_legacy_applied(raw: str | None, plan_id: str) -> bool:
    """``plan_id`` is in an earlier version's ``applied_plans`` JSON (unreadable: not in it).
    Parsed only when the id occurs in the text at all."""
    if not raw or plan_id not in raw:
        return False
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and plan_id in obj


@dataclass(frozen=True, slots=True)
class LedgerChange:
    applied: bool
    reason: str  # applied | duplicate_plan | no_order | no_ledger
    before: Decimal | None = None
    after: Decimal | None = None
    update: dict[str, str] | None = None  # the fields written


def ledger_update(h: Mapping[str, str], result: Result, result_id: str, now: float) -> LedgerChange:
    """What applying ``result`` to the ledger hash ``h`` writes. Pure."""
    before = decimal_or_none(h.get("last_known_amt"))
    if result.status not in ORDER_SENT:
        return LedgerChange(False, "no_order", before, before)
    field = applied_field(result.plan_id)
    if h.get(field) is not None or _in_legacy_applied(h.get(LEGACY_APPLIED), result.plan_id):
        return LedgerChange(False, "duplicate_plan", before, before)
    update = {"last_result_id": result_id, "last_update_ts": f"{now:.6f}", field: f"{now:.6f}"}
    last_order = float_or_none(h.get("last_order_time_epoch"))
    if last_order is None or result.ts >= last_order:
        update["last_order_time_epoch"] = f"{result.ts:.6f}"
        update["last_order_id"] = result.order_id
    after, reason = before, "applied"
    delta = result.signed_delta
    if delta != 0:
        if before is None:
            # No ledger yet: the exchange amount it will be initialised from includes this fill.
            reason = "no_ledger"
        else:
            after = before + delta
            update["last_known_amt"] = fmt_decimal(after)
            update["last_known_side"] = side_of(after)
    return LedgerChange(True, reason, before, after, update)


#: The ledger fields the decisions read: the compare-and-set checks them unchanged (applying
#: a result also reads, and checks, its plan's ``applied:<plan_id>``).
LEDGER_READ_FIELDS = (*LEDGER_CHECK_FIELDS, LEGACY_APPLIED)


async def _write_ledger(
    r: AsyncRedis,
    keys: Keys,
    symbol: str,
    decide: LedgerDecide[T],
    *,
    read_inflight: bool = False,
    release_claim_of: str | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[T, bool, int]:
    """Read the symbol's ledger fields ``LEDGER_READ_FIELDS`` and ``extra`` (and, with
    ``read_inflight``, its in-flight claim, in the same round trip), decide, and write the
    ledger fields with the audit entry in one step, only if the fields read are unchanged,
    else read and decide again (:meth:`AtomicSteps.write_ledger`). Returns the decision's
    answer, whether the claim was released, and how many fields the ledger hash had when
    read.

    ``release_claim_of``: a plan id whose in-flight claim on the symbol is dropped (if it
    holds it) in the step that writes the ledger, where the server allows it (the answer
    says; else the caller releases it after)."""
    return await steps_for(r).write_ledger(
        keys.ledger(symbol),
        keys.decisions,
        decide,
        read=(*LEDGER_READ_FIELDS, *extra),
        claim_key=keys.inflight(symbol),
        read_claim=read_inflight,
        release_claim_of=release_claim_of,
    )


async def prune_applied(r: AsyncRedis, keys: Keys, symbol: str, now: float | None = None) -> int:
    """Delete the symbol's applied-plan fields older than ``APPLIED_PLANS_TTL_S`` and the oldest
    beyond ``APPLIED_PLANS_MAX``. Returns how many were deleted. Not atomic with the ledger
    writes, and need not be: only plans too old to be applied again lose their mark."""
    now = time.time() if now is None else now
    h = await r.hgetall(keys.ledger(symbol))
    marks = sorted(
        ((float_or_none(v) or 0.0, f) for f, v in h.items() if f.startswith(APPLIED_PREFIX)),
        reverse=True,
    )
    drop = [
        f
        for i, (at, f) in enumerate(marks)
        if i >= APPLIED_PLANS_MAX or now - at >= APPLIED_PLANS_TTL_S
    ]
    if drop:
        await r.hdel(keys.ledger(symbol), *drop)
    return len(drop)


async def apply_result(
    r: AsyncRedis, keys: Keys, result: Result, result_id: str, *, release: bool = False
) -> LedgerChange:
    """Apply one result to its symbol's ledger, once per plan, atomically: the amount, the
    applied plan ids and the ``LEDGER_APPLY`` audit entry are written together or not at all
    (:func:`_write_ledger`).

    ``release``: then drop the plan's in-flight claim on the symbol (if it holds it): in the
    ledger write's own step when there is one to write and the server allows it, else
    (nothing to write: a duplicate, no order; or a Cluster) by ``release_claim`` right after.
    Never before the ledger holds the result."""

    def decide(
        h: dict[str, str], _in_flight: str | None
    ) -> tuple[LedgerChange, LedgerWrite | None]:
        change = ledger_update(h, result, result_id, time.time())
        if change.update is None:
            return change, None
        audit = audit_fields(
            plan_id=result.plan_id,
            symbol=result.symbol,
            layer=LAYER,
            decision="LEDGER_APPLY",
            reason=change.reason,
            context={
                "result_id": result_id,
                "status": result.status.value,
                "filled_qty": fmt_decimal(result.filled_qty),
                "side": result.side,
                "ledger_before": _s(change.before),
                "ledger_after": _s(change.after),
            },
        )
        return change, (change.update, audit)

    change, released, size = await _write_ledger(
        r,
        keys,
        result.symbol,
        decide,
        release_claim_of=result.plan_id if release else None,
        extra=(applied_field(result.plan_id),),
    )
    if release and not released:
        await release_claim(r, keys, result.symbol, result.plan_id)
    if size > APPLIED_PLANS_MAX + APPLIED_PRUNE_SLACK + LEDGER_OTHER_FIELDS:
        await prune_applied(r, keys, result.symbol)
    return change


def _s(d: Decimal | None) -> str | None:
    return None if d is None else fmt_decimal(d)


async def init_ledgers(r: AsyncRedis, keys: Keys, amounts: Mapping[str, Decimal]) -> list[str]:
    """Initialise the missing ledgers among ``amounts`` from the exchange, each with an audit
    entry. Two round trips whatever the number of symbols. Returns the symbols initialised."""
    if not amounts:
        return []
    syms = list(amounts)
    pipe = r.pipeline(transaction=False)
    for sym in syms:
        pipe.hsetnx(keys.ledger(sym), "last_known_amt", fmt_decimal(amounts[sym]))
    created = [s for s, ok in zip(syms, await pipe.execute(), strict=True) if ok]
    if not created:
        return []
    now = time.time()
    pipe = r.pipeline(transaction=False)
    for sym in created:
        amt = amounts[sym]
        pipe.hset(
            keys.ledger(sym),
            mapping={"last_known_side": side_of(amt), "last_update_ts": f"{now:.6f}"},
        )
        pipe.hsetnx(keys.ledger(sym), "epoch", "0")
        add_audit(
            pipe,
            keys,
            plan_id="",
            symbol=sym,
            layer=LAYER,
            decision="LEDGER_INIT",
            reason="first_sight",
            context={"ledger_amt": fmt_decimal(amt), "source": "exchange"},
            ts=now,
        )
    await pipe.execute()
    return created


async def reconcile(
    r: AsyncRedis,
    keys: Keys,
    symbol: str,
    exchange_amt: Decimal,
    *,
    operator: str,
    note: str,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Set the ledger to the exchange amount on purpose, with a ``RECONCILE`` audit entry.
    Starts a new position epoch, so plans made on the old beliefs are never the same plan as
    the ones made after. ``in_flight_plan`` in the answer: a close P3.3 allowed and whose result
    has not arrived (reconciling under it may count its fill twice)."""

    def decide(
        h: dict[str, str], in_flight: str | None
    ) -> tuple[dict[str, Any], LedgerWrite | None]:
        before, epoch = h.get("last_known_amt"), int(h.get("epoch") or 0)
        before_d = decimal_or_none(before)
        change: dict[str, Any] = {
            "symbol": symbol,
            "ledger_before": before,
            "ledger_after": fmt_decimal(exchange_amt),
            "exchange_amt": fmt_decimal(exchange_amt),
            "diff": None if before_d is None else fmt_decimal(exchange_amt - before_d),
            "epoch_before": epoch,
            "epoch_after": epoch + 1,
            "in_flight_plan": in_flight,
            "operator": operator,
            "note": note,
            "dry_run": dry_run,
        }
        if dry_run:
            return change, None
        now = time.time()
        fields = {
            "last_known_amt": fmt_decimal(exchange_amt),
            "last_known_side": side_of(exchange_amt),
            "last_update_ts": f"{now:.6f}",
            "epoch": str(epoch + 1),
        }
        audit = audit_fields(
            plan_id="",
            symbol=symbol,
            layer=LAYER,
            decision="RECONCILE",
            reason="operator_reconcile",
            context=change,
            ts=now,
        )
        return change, (fields, audit)

    change, _, _ = await _write_ledger(r, keys, symbol, decide, read_inflight=True)
    return change


async def release_claim(r: AsyncRedis, keys: Keys, symbol: str, plan_id: str) -> bool:
    """Drop the symbol's in-flight claim if (and only if) ``plan_id`` holds it."""
    return await steps_for(r).release_claim(keys.inflight(symbol), plan_id)
