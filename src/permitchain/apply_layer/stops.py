"""The chain's own resting stop orders, per symbol: the stop book.

Every stop the executor places (one client order id per stop generation: ``pc-<plan>-sl``)
is written to ``quantum:apply:stops:{<SYMBOL>}`` (a hash: client order id -> plan id,
quantity, trigger price and time, joined by ``|``). The exchange adapters place a new stop
first and then cancel the symbol's previous ones (the position is never without a stop),
so a new stop leaves only itself in the book. A close that leaves nothing of the position
(its fill equals the position P3.3 saw) cancels every stop in the book on the exchange and
empties it: a leftover reduce-only stop could otherwise trigger later against a new position
or block its close (Binance -2022/-4118).

A cancel that fails (the exchange unreachable) leaves the entry in the book, logged
``[SL] ... not cancelled``; the next full close of the symbol, or ``cancel_all`` after a
restart, tries again. Redis faults here are logged and never fail the plan's result: the
order already happened.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from permitchain.contract.errors import ExchangeError
from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal
from permitchain.exchange.base import Exchange, OrderInfo
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.executor")

BOOK_TTL_S = 30 * 86400  # a symbol untouched this long forgets its book


@dataclass(frozen=True, slots=True)
class BookedStop:
    client_order_id: str
    plan_id: str
    qty: Decimal
    stop_price: Decimal | None
    ts: float


def _parse(coid: str, raw: str) -> BookedStop:
    plan_id, qty, price, ts = [*raw.split("|"), "", "0", "", "0"][:4]
    return BookedStop(
        coid, plan_id, Decimal(qty or "0"), Decimal(price) if price else None, float(ts or 0)
    )


class StopBook:
    def __init__(self, r: AsyncRedis, keys: Keys) -> None:
        self.redis, self.keys = r, keys

    async def stops(self, symbol: str) -> list[BookedStop]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.stop_book(symbol))
        return sorted((_parse(c, v) for c, v in raw.items()), key=lambda b: b.ts)

    async def placed(self, symbol: str, plan_id: str, order: OrderInfo) -> None:
        """A new stop is in place (and the adapter cancelled the previous ones): the book
        holds it alone."""
        key = self.keys.stop_book(symbol)
        value = "|".join(
            [
                plan_id,
                fmt_decimal(order.requested_qty),
                fmt_decimal(order.stop_price) if order.stop_price else "",
                f"{time.time():.6f}",
            ]
        )
        try:
            old = [c for c in await self.redis.hgetall(key) if c != order.client_order_id]
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, order.client_order_id, value)
            if old:
                pipe.hdel(key, *old)
            pipe.expire(key, BOOK_TTL_S)
            await pipe.execute()
        except REDIS_FAULTS as e:
            log.warning(
                "[SL] symbol=%s stop %s not written to the stop book: %s",
                symbol,
                order.client_order_id,
                e,
            )

    async def cancel_all(self, symbol: str, exchange: Exchange, reason: str) -> list[str]:
        """Cancel every stop in the symbol's book on the exchange; returns the client order
        ids no longer open there (removed from the book). Never raises."""
        try:
            booked = await self.stops(symbol)
        except REDIS_FAULTS as e:
            log.warning("[SL] symbol=%s stop book unreadable: %s", symbol, e)
            return []
        done: list[str] = []
        for b in booked:
            try:
                after = await exchange.cancel_order(symbol, b.client_order_id)
            except ExchangeError as e:
                log.warning(
                    "[SL] symbol=%s stop %s not cancelled (%s): %s",
                    symbol,
                    b.client_order_id,
                    reason,
                    e,
                )
                continue
            status = after.status.value if after is not None else "absent"
            log.info(
                "[SL] symbol=%s stop %s cancelled (%s): now %s",
                symbol,
                b.client_order_id,
                reason,
                status,
            )
            done.append(b.client_order_id)
        if done:
            try:
                await self.redis.hdel(self.keys.stop_book(symbol), *done)
            except REDIS_FAULTS as e:
                log.warning("[SL] symbol=%s stop book not updated: %s", symbol, e)
        return done
