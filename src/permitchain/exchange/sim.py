"""The simulated exchange: state in AsyncRedis under ``quantum:sim:*`` so every process sees the
same account. Behaves like a careful exchange: reduce-only orders that would not reduce are
rejected (code -2022), quantities off the step are rejected (-1111), a repeated client order
id returns the existing order and never fills twice. A stop the mark has already reached (a
SELL stop at or above the mark, a BUY stop at or below it) is refused as Binance refuses it
(-2021, ``StopWouldTrigger``), so the executor's close-at-market path is the same on both.

Fault injection (``quantum:sim:config`` hash, set with ``permitchain sim fault``):
``latency_ms``; ``fetch_fail`` = 1 (position reads fail); ``order_mode`` = ``fill`` (default) |
``new`` (accepted, never filled) | ``reject`` (-2019 margin) | ``lose_response`` (filled, but
the caller sees a timeout) | ``timeout`` (not placed, the caller sees a timeout).

A market order is one ``sim_order.lua`` run, under the symbol's hash tag: the script reads
the order record of the client order id, the filters and the position, decides (fill,
reject, the existing order, an injected fault) and records the order and the position's new
amount together, under the config's fault mode after its injected latency; the fill record
goes to ``quantum:sim:fills`` (on a single server inside the same step; how the config and
the fills stream, both outside the symbol's slot, are handled on a Redis Cluster is
:mod:`permitchain.store.sim_order`'s).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache

from permitchain.contract.errors import (
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    OrderRejected,
    StopWouldTrigger,
    StoreError,
)
from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal, parse_decimal
from permitchain.exchange.base import (
    OrderInfo,
    OrderStatus,
    PositionInfo,
    Side,
    SymbolFilters,
)
from permitchain.store import AsyncRedis, atranslate
from permitchain.store.sim_order import SimOrderReply, read_config, sim_market_order

ORDER_TTL_S = 7 * 86400
READ_CHUNK = 100
DEFAULT_FILTERS = {
    "step_size": "0.001",
    "min_qty": "0.001",
    "max_qty": "1000",
    "min_notional": "5",
    "tick_size": "0.1",
}


def _dec(v: str | None, default: str = "0") -> Decimal:
    return Decimal(v if v not in (None, "") else default)


def _filters(symbol: str, h: dict[str, str]) -> SymbolFilters:
    return SymbolFilters(
        symbol=symbol,
        step_size=_dec(h.get("step_size")),
        min_qty=_dec(h.get("min_qty")),
        max_qty=_dec(h["max_qty"]) if h.get("max_qty") else None,
        min_notional=_dec(h.get("min_notional")),
        tick_size=_dec(h.get("tick_size"), "0.01"),
    )


@lru_cache(maxsize=1024)
def _filters_of(symbol: str, items: tuple[tuple[str, str], ...]) -> SymbolFilters:
    """:func:`_filters` of a filters hash given as its items, parsed once per distinct hash
    (the services read the filters often; they change when an operator lists the symbol)."""
    return _filters(symbol, dict(items))


def _outcome(symbol: str, qty: Decimal, reply: SimOrderReply) -> OrderInfo:
    """The order the script recorded or found, or its reject or injected timeout raised."""
    if reply.outcome in ("ok", "exists"):
        return _order(reply.order)
    if reply.outcome == "reject":
        raise OrderRejected(_reject_message(symbol, qty, reply), code=reply.code)
    raise OrderOutcomeUnknown("sim: request timed out (fault injected)")


def _reject_message(symbol: str, qty: Decimal, reply: SimOrderReply) -> str:
    """The message of a reject, by its code (Binance's wording where it has one)."""
    if reply.code == -4003:
        low, high = reply.detail
        top = parse_decimal(high, "max_qty") if high else None
        return f"sim: quantity {qty} outside [{parse_decimal(low, 'min_qty')}, {top}]"
    return {
        -2019: "sim: Margin is insufficient (fault injected)",
        -1121: f"sim: invalid symbol {symbol}",
        -1111: f"sim: precision is over the maximum ({qty})",
        -2022: "sim: ReduceOnly Order is rejected.",
    }.get(reply.code, f"sim: rejected ({reply.code})")


def _position(s: str, h: dict[str, str]) -> PositionInfo:
    amt = _dec(h.get("amt"))
    entry = _dec(h.get("entry_price"))
    mark = _dec(h.get("mark_price"), h.get("entry_price") or "0")
    at = h.get("mark_time")
    return PositionInfo(
        symbol=s,
        amt=amt,
        entry_price=entry,
        mark_price=mark,
        leverage=_dec(h.get("leverage"), "1"),
        unrealized_pnl=(mark - entry) * amt if entry else Decimal(0),
        mark_time=float(at) if at else None,
    )


def _order(h: dict[str, str]) -> OrderInfo:
    return OrderInfo(
        symbol=h["symbol"],
        client_order_id=h["client_order_id"],
        order_id=h["order_id"],
        side=h["side"],  # type: ignore[arg-type]
        type=h["type"],
        status=OrderStatus(h["status"]),
        requested_qty=_dec(h["requested_qty"]),
        filled_qty=_dec(h["filled_qty"]),
        avg_price=_dec(h["avg_price"]) if h.get("avg_price") else None,
        reduce_only=h.get("reduce_only") == "true",
        stop_price=_dec(h["stop_price"]) if h.get("stop_price") else None,
    )


class SimExchange:
    """``Exchange`` implementation over Redis. Cheap to construct; the state is Redis's, and
    a market order is decided where the state is: by one script (``sim_order.lua``, run by
    :mod:`permitchain.store.sim_order`)."""

    name = "sim"

    def __init__(self, redis: AsyncRedis, keys: Keys, order_ttl_s: int = ORDER_TTL_S) -> None:
        self.redis = redis
        self.keys = keys
        self.order_ttl_s = order_ttl_s  # the services pass EXEC_RECORD_TTL_S
        #: symbol -> its position hash as last read by fetch_positions, and that parsed
        self._positions: dict[str, tuple[dict[str, str], PositionInfo]] = {}

    # -- administration (CLI, tests, price driver) -------------------------------------------
    async def list_symbol(self, symbol: str, **filters: str) -> None:
        async with atranslate():
            fk = self.keys.sim_filters(symbol)
            existing = await self.redis.hgetall(fk)
            await self.redis.hset(fk, mapping={**DEFAULT_FILTERS, **existing, **filters})
            await self.redis.sadd(self.keys.sim_symbols, symbol)

    async def set_position(
        self, symbol: str, amt: Decimal, entry_price: Decimal | None = None
    ) -> None:
        await self.list_symbol(symbol)
        mapping = {"amt": fmt_decimal(amt)}
        if entry_price is not None:
            mapping["entry_price"] = fmt_decimal(entry_price)
        async with atranslate():
            await self.redis.hset(self.keys.sim_position(symbol), mapping=mapping)
            # pushed updates (exchange.stream.SimUserStream): the position changed
            await self.redis.xadd(
                self.keys.sim_events,
                {"e": "ACCOUNT_UPDATE", "symbol": symbol, "amt": mapping["amt"]},
                maxlen=10_000,
                approximate=True,
            )

    async def set_price(self, symbol: str, price: Decimal, at: float | None = None) -> None:
        """Set the mark; ``at``: the mark's own time (recorded candles), else none."""
        await self.list_symbol(symbol)
        mapping = {"mark_price": fmt_decimal(price), "mark_time": "" if at is None else f"{at:.6f}"}
        async with atranslate():
            await self.redis.hset(self.keys.sim_position(symbol), mapping=mapping)

    async def set_fault(self, **config: str) -> None:
        async with atranslate():
            await self.redis.hset(self.keys.sim_config, mapping=config)

    async def clear_faults(self) -> None:
        async with atranslate():
            await self.redis.delete(self.keys.sim_config)

    async def symbols(self) -> list[str]:
        async with atranslate():
            return sorted(await self.redis.smembers(self.keys.sim_symbols))

    # -- Exchange protocol ------------------------------------------------------------------
    async def _config(self) -> dict[str, str]:
        return await read_config(self.redis, self.keys)

    async def filters(self, symbols: Sequence[str] | None = None) -> dict[str, SymbolFilters]:
        syms = list(symbols) if symbols is not None else await self.symbols()
        async with atranslate():
            pipe = self.redis.pipeline(transaction=False)
            for s in syms:
                pipe.hgetall(self.keys.sim_filters(s))
            rows = await pipe.execute()
        return {s: _filters_of(s, tuple(h.items())) for s, h in zip(syms, rows, strict=True) if h}

    async def fetch_positions(
        self, symbols: Sequence[str] | None = None
    ) -> dict[str, PositionInfo]:
        cfg = await self._config()
        if cfg.get("fetch_fail") == "1":
            raise ExchangeUnavailable("sim: position endpoint failing (fault injected)")
        syms = list(symbols) if symbols is not None else await self.symbols()
        out: dict[str, PositionInfo] = {}
        try:
            async with atranslate():
                for i in range(0, len(syms), READ_CHUNK):  # one event-loop slice per chunk
                    chunk = syms[i : i + READ_CHUNK]
                    pipe = self.redis.pipeline(transaction=False)
                    for s in chunk:
                        pipe.hgetall(self.keys.sim_position(s))
                    for s, h in zip(chunk, await pipe.execute(), strict=True):
                        if h:
                            out[s] = self._parsed_position(s, h)
        except StoreError as e:
            raise ExchangeUnavailable(f"sim: {e}") from e
        return out

    def _parsed_position(self, symbol: str, h: dict[str, str]) -> PositionInfo:
        """:func:`_position` of a hash, parsed again only when it changed (a full poll reads
        every position; most did not move since the last one)."""
        last = self._positions.get(symbol)
        if last is not None and last[0] == h:
            return last[1]
        pos = _position(symbol, h)
        self._positions[symbol] = (h, pos)
        return pos

    async def mark_prices(self, symbols: Sequence[str] | None = None) -> dict[str, Decimal]:
        return {s: p.mark_price for s, p in (await self.fetch_positions(symbols)).items()}

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        await self._config()
        async with atranslate():
            h = await self.redis.hgetall(self.keys.sim_order(symbol, client_order_id))
        return _order(h) if h else None

    async def place_reduce_only_market(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        """One ``sim_order.lua`` run decides and records the order (store.sim_order), under
        the config's fault mode, after its injected latency."""
        reply = await sim_market_order(
            self.redis,
            self.keys,
            symbol,
            side,
            qty,
            client_order_id,
            mode=None,
            ttl_s=self.order_ttl_s,
        )
        order = _outcome(symbol, qty, reply)
        if reply.mode == "lose_response" and reply.outcome == "ok":
            raise OrderOutcomeUnknown("sim: response lost after acceptance (injected)")
        return order

    async def fill_inside(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        """A reduce-only market fill inside the exchange, as a stop's trigger makes one: the
        same script, untouched by the API's injected faults and latency (tests and tools
        that move the account as the exchange would; the trigger itself is
        ``sim_stops.trigger_stop``)."""
        reply = await sim_market_order(
            self.redis,
            self.keys,
            symbol,
            side,
            qty,
            client_order_id,
            mode="fill",
            ttl_s=self.order_ttl_s,
        )
        return _outcome(symbol, qty, reply)

    async def place_stop_market(
        self, symbol: str, side: Side, stop_price: Decimal, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        await self._config()
        order_key = self.keys.sim_order(symbol, client_order_id)
        async with atranslate():
            existing = await self.redis.hgetall(order_key)
            if existing:
                return _order(existing)
            pos = await self.redis.hmget(
                self.keys.sim_position(symbol), ["mark_price", "entry_price"]
            )
            mark = _dec(pos[0] or pos[1])
            if mark > 0 and (stop_price >= mark if side == "SELL" else stop_price <= mark):
                # as Binance: a stop the mark has already reached is refused, nothing placed
                raise StopWouldTrigger(
                    f"sim: -2021 Order would immediately trigger ({side} stop "
                    f"{fmt_decimal(stop_price)}, mark {fmt_decimal(mark)})",
                    code=-2021,
                )
            oid = await self.redis.incr(self.keys.sim_order_seq(symbol))
            fields = {
                "symbol": symbol,
                "client_order_id": client_order_id,
                "order_id": str(oid),
                "side": side,
                "type": "STOP_MARKET",
                "status": "NEW",
                "requested_qty": fmt_decimal(qty),
                "filled_qty": "0",
                "avg_price": "",
                "reduce_only": "true",
                "stop_price": fmt_decimal(stop_price),
                "created_at": f"{time.time():.6f}",
            }
            pipe = self.redis.pipeline(transaction=True)
            prev = await self.redis.hget(self.keys.sim_stop(symbol), "client_order_id")
            if prev:
                pipe.hset(self.keys.sim_order(symbol, prev), "status", "CANCELED")
            pipe.hset(order_key, mapping=fields)
            pipe.expire(order_key, self.order_ttl_s)
            pipe.hset(self.keys.sim_stop(symbol), mapping=fields)
            await pipe.execute()
        return _order(fields)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        """Cancel an open order (our live stop, or a market order left NEW)."""
        await self._config()
        order_key = self.keys.sim_order(symbol, client_order_id)
        async with atranslate():
            h = await self.redis.hgetall(order_key)
            if not h:
                return None
            if h.get("status") == OrderStatus.NEW.value:
                pipe = self.redis.pipeline(transaction=True)
                pipe.hset(order_key, "status", OrderStatus.CANCELED.value)
                live = await self.redis.hget(self.keys.sim_stop(symbol), "client_order_id")
                if live == client_order_id:
                    pipe.hset(self.keys.sim_stop(symbol), "status", OrderStatus.CANCELED.value)
                await pipe.execute()
                h["status"] = OrderStatus.CANCELED.value
        return _order(h)

    async def position_mode(self) -> str:
        """The simulated account is one-way (one position per symbol)."""
        return "one-way"

    async def open_orders(self, symbol: str | None = None) -> list[OrderInfo]:
        """The live stop of each symbol (the sim keeps one; market orders never rest)."""
        syms = [symbol] if symbol is not None else await self.symbols()
        async with atranslate():
            pipe = self.redis.pipeline(transaction=False)
            for s in syms:
                pipe.hgetall(self.keys.sim_stop(s))
            rows = await pipe.execute()
        return [_order(h) for h in rows if h and h.get("status") == OrderStatus.NEW.value]

    async def close(self) -> None:
        return None
