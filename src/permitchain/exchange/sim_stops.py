"""Stop triggering for the simulated exchange: our reduce-only STOP_MARKET fills when the
mark crosses it (a SELL stop at mark ≤ stop price, a BUY stop at mark ≥ stop price).

The sim keeps our one live stop per symbol in ``quantum:sim:{<SYMBOL>}:stop`` (written by
``SimExchange.place_stop_market``). When the mark crosses it, the stop fills at the mark for
min(its quantity, |position|) rounded down to the step: reduce-only, it never opens or flips
a position. A stop that would not reduce (the position is flat or on the other side) expires.

The trigger is one run of the sim's order script (``sim_order.lua``, mode ``trigger``): it
checks the stop is still live and crossed, fills it through the market-order path as the
order ``<stop id>-fill`` (one order record per client order id) and marks the stop FILLED
with that order's quantity and price, all in one step, so a stop fills at most once even
when two triggers race; a fill order left by a trigger that stopped half-way (before the
script did both) is taken as the stop's fill. (No WATCH: the exit brain's least-privilege
Redis user runs scripts on the sim's keys, not optimistic transactions.)

Like a real exchange's stop, this fill happens outside the chain: the P3.3 ledger does not
see it, so the next plan for the symbol meets ``no_position`` or a quantity mismatch until
``permitchain reconcile``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from permitchain.exchange.base import OrderInfo, round_down
from permitchain.exchange.sim import SimExchange, _order
from permitchain.store import atranslate
from permitchain.store.sim_order import sim_stop_trigger


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
    """What a stop does at this mark: None (not crossed), FILLED or EXPIRED. Pure: the rule
    ``sim_order.lua``'s trigger applies (tests hold the two to the same answers)."""
    crossed = mark <= stop_price if side == "SELL" else mark >= stop_price
    if not crossed:
        return None
    reduces = (side == "SELL" and amt > 0) or (side == "BUY" and amt < 0)
    qty = round_down(min(requested, abs(amt)), step) if reduces else Decimal(0)
    if qty <= 0:
        return StopOutcome("EXPIRED", Decimal(0), amt)
    return StopOutcome("FILLED", qty, amt - qty if side == "SELL" else amt + qty)


async def trigger_stop(sim: SimExchange, symbol: str) -> OrderInfo | None:
    """Fill or expire the symbol's live stop if the current mark crossed it: one
    ``sim_order.lua`` run (store.sim_order) decides and records it, :func:`stop_outcome`'s
    rule applied to the stop, position and filters as they are on the server.

    Returns the stop order as it now stands, or None when there is no live stop, no mark,
    the mark has not crossed it, or its fill was refused (tried again next step).
    """
    async with atranslate():
        stop_id, status = await sim.redis.hmget(
            sim.keys.sim_stop(symbol), ["client_order_id", "status"]
        )
    if status != "NEW" or not stop_id:
        return None
    reply = await sim_stop_trigger(sim.redis, sim.keys, symbol, stop_id, ttl_s=sim.order_ttl_s)
    return _order(reply.order) if reply.outcome == "stop" else None
