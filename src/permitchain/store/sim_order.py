"""The simulated exchange's market order, and the trigger of its stop, as one step each:
``sim_order.lua`` decides from the server's state (the order record of the client order id,
the filters, the position; the stop) and records the order, the position's new amount and
the stop's status together; this module gathers its arguments, runs it and reads its reply.
A fill record then goes to the fills stream (``quantum:sim:fills``, outside the symbol's
hash slot), added once, by the call whose script recorded the fill.

The exchange's types and errors are the caller's (``permitchain.exchange.sim``): a reply
here is what the script said, as data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from redis.exceptions import ResponseError

from permitchain.contract.errors import StoreError
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
    (nothing placed); of a trigger: ``stop`` (``order``: the stop as it now stands) or
    ``none`` (nothing to do)."""

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
    if outcome in ("ok", "stop"):
        return SimOrderReply(outcome, order=pairs(res[1]), fill=pairs(res[2]))
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
    return await _run(redis, keys, symbol, client_order_id, args, [])


async def sim_stop_trigger(
    redis: AsyncRedis, keys: Keys, symbol: str, stop_id: str, *, ttl_s: int
) -> SimOrderReply:
    """Run ``sim_order.lua``'s trigger of the symbol's live stop ``stop_id`` (its fill is the
    order ``<stop_id>-fill``), then add the fill record to the fills stream."""
    fill_id = f"{stop_id}-fill"
    args = [ttl_s, f"{time.time():.6f}", symbol, fill_id, stop_id, "", "trigger"]
    stop_keys = [keys.sim_stop(symbol), keys.sim_order(symbol, stop_id)]
    return await _run(redis, keys, symbol, fill_id, args, stop_keys)


async def _run(
    redis: AsyncRedis,
    keys: Keys,
    symbol: str,
    client_order_id: str,
    args: list[Any],
    extra_keys: list[str],
) -> SimOrderReply:
    """The script on the symbol's keys (and ``extra_keys``), then the fill record added."""
    order_keys = [
        keys.sim_position(symbol),
        keys.sim_order(symbol, client_order_id),
        keys.sim_order_seq(symbol),
        keys.sim_filters(symbol),
        *extra_keys,
    ]
    async with atranslate():
        try:
            res = await scripts_for(redis).sim_order(keys=order_keys, args=args)
        except ResponseError as e:  # data it cannot read (a wrong type, not a decimal)
            raise StoreError(f"redis: {e}") from e
        reply = parse_reply(res)
        if reply.fill:
            await redis.xadd(keys.sim_fills, reply.fill, maxlen=FILLS_MAXLEN, approximate=True)
    return reply
