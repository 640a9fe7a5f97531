"""Pushed account updates: the exchange tells us when a position or an order changes.

A ``UserStream`` is the pushed counterpart of polling. ``positions()`` waits for the next
pushed position change and returns the positions the stream changed; ``orders()`` the same
for orders. ``alive()`` is true while the stream is connected: a snapshot is fresh while its
stream is alive (the position brain keeps it so, ``position_brain.pushed``). A stream that
breaks raises ``ExchangeUnavailable`` and is ``alive() == False`` until reconnected; polling
stays the fallback and the periodic full check.

* Binance: the user data stream (listen key, ``ACCOUNT_UPDATE``, ``ORDER_TRADE_UPDATE``)
  through ccxt.pro (``exchange.binance_stream``).
* The simulated exchange: its fills stream ``quantum:sim:fills`` (every fill, with the
  position after it) and ``quantum:sim:events`` (positions set from outside, e.g.
  ``permitchain sim set-position``), read with ``XREAD BLOCK``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Protocol, runtime_checkable

from permitchain.contract.errors import ExchangeUnavailable, StoreError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import ExchangeKind, Settings
from permitchain.exchange.base import OrderInfo, PositionInfo
from permitchain.exchange.sim import SimExchange
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.exchange.stream")

#: Longest one wait for a pushed event lasts before returning nothing (the caller loops).
BLOCK_MS = 1000
STREAM_FAULTS: tuple[type[BaseException], ...] = (StoreError, *REDIS_FAULTS)


@runtime_checkable
class UserStream(Protocol):
    name: str

    async def positions(self) -> dict[str, PositionInfo]:
        """The positions changed by the next pushed update(s) (empty: none within a second).
        ``mark_price`` is 0 when the push does not carry it. Raises ``ExchangeUnavailable``
        when the stream is down."""
        ...

    async def orders(self) -> list[OrderInfo]:
        """The orders changed by the next pushed update(s), as ``positions``."""
        ...

    def alive(self) -> bool: ...

    async def close(self) -> None: ...


class SimUserStream:
    """The simulated exchange's pushed updates, from its Redis streams. Positions and orders
    are read back from the sim's hashes (the truth) for the symbols an entry names."""

    name = "sim"

    def __init__(self, redis: AsyncRedis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self.sim = SimExchange(redis, keys)
        self._last = {"positions": "$", "orders": "$"}
        self._alive = False

    def alive(self) -> bool:
        return self._alive

    async def _read(self, who: str) -> list[dict[str, str]]:
        streams = [self.keys.sim_fills, self.keys.sim_events]
        try:
            if self._last[who] == "$":  # resolve "$" to concrete ids once: nothing is lost
                known = []
                for name in streams:
                    info = (
                        await self.redis.xinfo_stream(name) if await self.redis.exists(name) else {}
                    )
                    known.append(str(info.get("last-generated-id") or "0-0"))
                self._last[who] = ",".join(known)
            ids: dict[str, str] = dict(zip(streams, self._last[who].split(","), strict=True))
            resp = await self.redis.xread(ids, count=1000, block=BLOCK_MS)
        except STREAM_FAULTS as e:
            self._alive = False
            raise ExchangeUnavailable(f"sim stream: {e}") from e
        self._alive = True
        out: list[dict[str, str]] = []
        for name, entries in resp or []:
            for entry_id, fields in entries:
                ids[name] = entry_id
                out.append(fields)
        self._last[who] = ",".join(ids[name] for name in streams)
        return out

    async def positions(self) -> dict[str, PositionInfo]:
        symbols = sorted({f["symbol"] for f in await self._read("positions") if "symbol" in f})
        if not symbols:
            return {}
        got = await self.sim.fetch_positions(symbols)
        zero = Decimal(0)
        return {s: got.get(s) or PositionInfo(s, zero, zero, zero) for s in symbols}

    async def orders(self) -> list[OrderInfo]:
        out: list[OrderInfo] = []
        for f in await self._read("orders"):
            coid = f.get("client_order_id")
            if coid and "symbol" in f:
                order = await self.sim.fetch_order(f["symbol"], coid)
                if order is not None:
                    out.append(order)
        return out

    async def close(self) -> None:
        self._alive = False


def make_stream(settings: Settings, redis: AsyncRedis, keys: Keys) -> UserStream | None:
    """The configured exchange's pushed updates; None when ``PUSHED_UPDATES=false``."""
    if not settings.pushed_updates:
        return None
    if settings.exchange is ExchangeKind.SIM:
        return SimUserStream(redis, keys)
    from permitchain.exchange.binance_stream import BinanceUserStream  # noqa: PLC0415

    key, secret = settings.binance_api_key, settings.binance_api_secret
    if key is None or secret is None:
        return None
    return BinanceUserStream(
        key.get_secret_value(),
        secret.get_secret_value(),
        demo=settings.exchange is ExchangeKind.BINANCE_DEMO,
        base_url=settings.binance_base_url,
    )
