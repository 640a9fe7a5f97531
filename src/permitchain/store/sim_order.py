"""The simulated exchange's market order as one step: ``sim_order.lua`` decides it from the
server's state (the order record of the client order id, the filters, the position) and
records it, the position's new amount included; this module gathers its arguments, runs it
and reads its reply. The fill record then goes to the fills stream (``quantum:sim:fills``,
outside the symbol's hash slot), added once, by the call whose script recorded the fill.

The exchange's types and errors are the caller's (``permitchain.exchange.sim``): a reply
here is what the script said, as data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal
from permitchain.store.client import AsyncRedis, atranslate
from permitchain.store.scripts import scripts_for

FILLS_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class SimOrderReply:
    """What the script decided. ``outcome``: ``ok`` (recorded; ``fill`` the fill record, {}
    when not filled), ``exists`` (the client order id was taken: ``order`` is that order),
    ``reject`` (``code`` and ``detail``: the min and max quantity of a -4003), ``timeout``
    (nothing placed)."""

    outcome: str
    order: dict[str, str] = field(default_factory=dict)
    fill: dict[str, str] = field(default_factory=dict)
    code: int = 0
    detail: tuple[str, ...] = ()


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash from a script's name, value list."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def parse_reply(res: list[Any]) -> SimOrderReply:
    """The script's reply as a :class:`SimOrderReply`."""
    outcome = res[0]
    if outcome == "ok":
        return SimOrderReply("ok", order=pairs(res[1]), fill=pairs(res[2]))
    if outcome == "exists":
        return SimOrderReply("exists", order=pairs(res[1]))
    if outcome == "reject":
        return SimOrderReply("reject", code=int(res[1]), detail=tuple(res[2:]))
    return SimOrderReply(outcome)


async def sim_market_order(
    redis: AsyncRedis,
    keys: Keys,
    symbol: str,
    side: str,
    qty: Decimal,
    client_order_id: str,
    *,
    mode: str,
    ttl_s: int,
) -> SimOrderReply:
    """Run ``sim_order.lua`` for one reduce-only market order under the fault ``mode``
    (``fill`` for a fill inside the exchange), then add its fill record to the fills
    stream. Redis errors are raised translated (``StoreError``)."""
    args = [ttl_s, f"{time.time():.6f}", symbol, client_order_id, side, fmt_decimal(qty), mode]
    order_keys = [
        keys.sim_position(symbol),
        keys.sim_order(symbol, client_order_id),
        keys.sim_order_seq(symbol),
        keys.sim_filters(symbol),
    ]
    async with atranslate():
        reply = parse_reply(await scripts_for(redis).sim_order(keys=order_keys, args=args))
        if reply.fill:
            await redis.xadd(keys.sim_fills, reply.fill, maxlen=FILLS_MAXLEN, approximate=True)
    return reply
