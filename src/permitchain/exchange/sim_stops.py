"""Stop triggering for the simulated exchange: our reduce-only STOP_MARKET fills when the
mark crosses it (a SELL stop at mark ≤ stop price, a BUY stop at mark ≥ stop price).

The sim keeps our one live stop per symbol in ``quantum:sim:{<SYMBOL>}:stop`` (written by
``SimExchange.place_stop_market``). When the mark crosses it, the stop fills at the mark for
min(its quantity, |position|) rounded down to the step: reduce-only, it never opens or flips
a position. A stop that would not reduce (the position is flat or on the other side) expires.
The position and the order change in one transaction (WATCH on the position and the stop).

Like a real exchange's stop, this fill happens outside the chain: the P3.3 ledger does not
see it, so the next plan for the symbol meets ``no_position`` or a quantity mismatch until
``permitchain reconcile``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from redis.exceptions import WatchError

from permitchain.exchange.base import OrderInfo, round_down
from permitchain.exchange.sim import SimExchange, _dec, _filters, _order
from permitchain.models import fmt_decimal
from permitchain.store import atranslate

MAX_TRIES = 20
FILLS_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class StopOutcome:
    status: str  # FILLED or EXPIRED
    qty: Decimal
    new_amt: Decimal


def stop_outcome(
    side: str, stop_price: Decimal, requested: Decimal, amt: Decimal, mark: Decimal,
    step: Decimal,
) -> StopOutcome | None:  # fmt: skip
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
    or the mark has not crossed it.
    """
    k = sim.k
    pos_key, stop_key = k.sim_position(symbol), k.sim_stop(symbol)
    for _ in range(MAX_TRIES):
        async with atranslate(), sim.r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(pos_key, stop_key)
                stop: dict[str, str] = await pipe.hgetall(stop_key)
                pos: dict[str, str] = await pipe.hgetall(pos_key)
                filt: dict[str, str] = await pipe.hgetall(k.sim_filters(symbol))
                if stop.get("status") != "NEW" or not pos.get("mark_price"):
                    return None
                amt, mark = _dec(pos.get("amt")), _dec(pos["mark_price"])
                out = stop_outcome(
                    stop["side"], _dec(stop["stop_price"]), _dec(stop["requested_qty"]),
                    amt, mark, _filters(symbol, filt).step_size if filt else Decimal("0.001"),
                )  # fmt: skip
                if out is None:
                    return None
                now = time.time()
                update = {
                    "status": out.status, "filled_qty": fmt_decimal(out.qty),
                    "avg_price": fmt_decimal(mark) if out.qty else "",
                    "triggered_at": f"{now:.6f}",
                }  # fmt: skip
                pipe.multi()
                pipe.hset(k.sim_order(symbol, stop["client_order_id"]), mapping=update)
                pipe.hset(stop_key, mapping=update)
                if out.qty:
                    pipe.hset(pos_key, "amt", fmt_decimal(out.new_amt))
                await pipe.execute()
            except WatchError:
                continue
        if out.qty:
            # The fills log lives outside the symbol's slot: written after, like market fills.
            async with atranslate():
                await sim.r.xadd(k.sim_fills, {
                    "symbol": symbol, "client_order_id": stop["client_order_id"],
                    "order_id": stop.get("order_id", ""), "side": stop["side"],
                    "type": "STOP_MARKET", "qty": fmt_decimal(out.qty),
                    "price": fmt_decimal(mark), "position_before": fmt_decimal(amt),
                    "position_after": fmt_decimal(out.new_amt), "ts": f"{now:.6f}",
                }, maxlen=FILLS_MAXLEN, approximate=True)  # fmt: skip
        return _order({**stop, **update})
    return None
