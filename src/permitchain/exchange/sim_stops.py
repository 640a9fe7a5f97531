"""Stop triggering for the simulated exchange: our reduce-only STOP_MARKET fills when the
mark crosses it (a SELL stop at mark ≤ stop price, a BUY stop at mark ≥ stop price).

The sim keeps our one live stop per symbol in ``quantum:sim:{<SYMBOL>}:stop`` (written by
``SimExchange.place_stop_market``). When the mark crosses it, the stop fills at the mark for
min(its quantity, |position|) rounded down to the step: reduce-only, it never opens or flips
a position. A stop that would not reduce (the position is flat or on the other side) expires.

The fill goes through the sim's own market-order path (``sim_order.lua``: decided on the
position and filters as they are, one order record per client order id) as the order
``<stop id>-fill``, so a stop fills at most once even when two triggers race or one dies
half-way; the stop is then marked FILLED with that order's quantity and price. (No WATCH:
the exit brain's least-privilege Redis user runs scripts on the sim's keys, not optimistic
transactions.)

Like a real exchange's stop, this fill happens outside the chain: the P3.3 ledger does not
see it, so the next plan for the symbol meets ``no_position`` or a quantity mismatch until
``permitchain reconcile``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from permitchain.contract.errors import OrderRejected
from permitchain.contract.models import fmt_decimal
from permitchain.exchange.base import OrderInfo, Side, round_down
from permitchain.exchange.sim import SimExchange, _dec, _filters, _order
from permitchain.store import atranslate

MAX_TRIES = 20


@dataclass(frozen=True, slots=True)
class StopOutcome:
    status: str  # FILLED or EXPIRED
    qty: Decimal
    new_amt: Decimal


def stop_outcome(
    side: str,
    stop_price: Decimal,
    requested: Decimal,
    amt: Decimal,
    mark: Decimal,
    step: Decimal,
) -> StopOutcome | None:
    """What a stop does at this mark: None (not crossed), FILLED or EXPIRED. Pure."""
    crossed = mark <= stop_price if side == "SELL" else mark >= stop_price
    if not crossed:
        return None
    reduces = (side == "SELL" and amt > 0) or (side == "BUY" and amt < 0)
    qty = round_down(min(requested, abs(amt)), step) if reduces else Decimal(0)
    if qty <= 0:
        return StopOutcome("EXPIRED", Decimal(0), amt)
    return StopOutcome("FILLED", qty, amt - qty if side == "SELL" else amt + qty)


async def trigger_stop(sim: SimExchange, symbol: str) -> OrderInfo | None:
    """Fill or expire the symbol's live stop if the current mark crossed it.

    Returns the stop order as it now stands, or None when there is no live stop, no mark,
    the mark has not crossed it, or the position kept moving (tried again next step).
    """
    k = sim.keys
    stop_key = k.sim_stop(symbol)
    for _ in range(MAX_TRIES):
        async with atranslate():
            pipe = sim.redis.pipeline(transaction=False)
            pipe.hgetall(stop_key)
            pipe.hgetall(k.sim_position(symbol))
            pipe.hgetall(k.sim_filters(symbol))
            stop, pos, filt = await pipe.execute()
        if stop.get("status") != "NEW" or not pos.get("mark_price"):
            return None
        side: Side = "SELL" if stop["side"] == "SELL" else "BUY"
        mark = _dec(pos["mark_price"])
        step = _filters(symbol, filt).step_size if filt else Decimal("0.001")
        out = stop_outcome(
            side,
            _dec(stop["stop_price"]),
            _dec(stop["requested_qty"]),
            _dec(pos.get("amt")),
            mark,
            step,
        )
        if out is None:
            return None
        update = {
            "status": out.status,
            "filled_qty": "0",
            "avg_price": "",
            "triggered_at": f"{time.time():.6f}",
        }
        if out.qty:
            try:
                coid = f"{stop['client_order_id']}-fill"
                fill = await sim.fill_inside(symbol, side, out.qty, coid)
            except OrderRejected:
                continue  # the position changed under us: read again
            update.update(
                filled_qty=fmt_decimal(fill.filled_qty),
                fill_order_id=fill.order_id,
                avg_price=fmt_decimal(fill.avg_price or mark),
            )
        async with atranslate():
            pipe = sim.redis.pipeline(transaction=False)
            pipe.hset(k.sim_order(symbol, stop["client_order_id"]), mapping=update)
            pipe.hset(stop_key, mapping=update)
            await pipe.execute()
        return _order({**stop, **update})
    return None
