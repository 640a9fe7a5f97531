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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

from hiredis import ReplyError

from permitchain.contract.errors import (
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    OrderRejected,
    StopWouldTrigger,
    StoreError,
)
from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal
from permitchain.exchange.base import (
    OrderInfo,
    OrderStatus,
    PositionInfo,
    Side,
    SymbolFilters,
)
from permitchain.store import AsyncRedis, atranslate, is_cluster
from permitchain.store.lean import error_of
from permitchain.store.scripts import Scripts, flat_pairs

ORDER_TTL_S = 7 * 86400
READ_CHUNK = 100
DEFAULT_FILTERS = {
    "step_size": "0.001",
    "min_qty": "0.001",
    "max_qty": "1000",
    "min_notional": "5",
    "tick_size": "0.1",
}


#: What a market order depends on, of the position, filters and config hashes: what the
#: script checks when it is decided from a remembered state.
POSITION_FIELDS = ("amt", "entry_price", "mark_price")
FILTER_FIELDS = ("step_size", "min_qty", "max_qty", "min_notional", "tick_size")
CONFIG_FIELDS = ("order_mode", "latency_ms")
NO_LATENCY = ("", "0")


@dataclass(slots=True)
class _State:
    """What an order is decided from: hashes as read (or a stale reply's), or the fields of
    them remembered. ``existing``: the order hash (None: not known; the script checks)."""

    pos: dict[str, str]
    filt: dict[str, str]
    existing: dict[str, str] | None
    cfg: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Plan:
    """An order to record: its mode, fields, fill record ({}: none) and the new position
    amount ('': unchanged)."""

    mode: str
    fields: dict[str, str]
    fill_record: dict[str, str]
    new_amt: str


def _only(h: dict[str, str], fields: tuple[str, ...]) -> dict[str, str]:
    return {f: h[f] for f in fields if f in h}


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash from a script's name, value list."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


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
    (an order reads the hash each time; it changes when an operator lists the symbol)."""
    return _filters(symbol, dict(items))


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
    """``Exchange`` implementation over Redis. Cheap to construct; the state is Redis's: it
    only remembers, per symbol, what its last order saw, an assumption its next order's
    script checks (:meth:`_attempt`)."""

    name = "sim"

    def __init__(self, redis: AsyncRedis, keys: Keys, order_ttl_s: int = ORDER_TTL_S) -> None:
        self.redis = redis
        self.keys = keys
        self.order_ttl_s = order_ttl_s  # the services pass EXEC_RECORD_TTL_S
        self.scripts = Scripts(redis)
        self.cluster = is_cluster(redis)
        #: symbol -> its position hash as last read by fetch_positions (its fields and values
        #: joined by NUL) and that parsed
        self._positions: dict[str, tuple[str, PositionInfo]] = {}
        # what the last order attempt on each symbol saw (position and filters fields) and
        # the config fields it ran under: the next order is decided from them (see _attempt)
        self._seen: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self._cfg: dict[str, str] | None = None

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
        async with atranslate():
            cfg: dict[str, str] = await self.redis.hgetall(self.keys.sim_config)
        latency = int(cfg.get("latency_ms") or 0)
        if latency:
            await asyncio.sleep(latency / 1000)
        return cfg

    async def filters(self, symbols: Sequence[str] | None = None) -> dict[str, SymbolFilters]:
        syms = list(symbols) if symbols is not None else await self.symbols()
        async with atranslate():
            pipe = self.redis.pipeline(transaction=False)
            for s in syms:
                pipe.hgetall(self.keys.sim_filters(s))
            rows = await pipe.execute()
        return {s: _filters(s, h) for s, h in zip(syms, rows, strict=True) if h}

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
                    rows = await self._hash_rows([self.keys.sim_position(s) for s in chunk])
                    for s, flat in zip(chunk, rows, strict=True):
                        if flat:
                            out[s] = self._parsed_position(s, flat)
        except StoreError as e:
            raise ExchangeUnavailable(f"sim: {e}") from e
        return out

    def _parsed_position(self, symbol: str, flat: list[str]) -> PositionInfo:
        """:func:`_position` of a hash given flat, parsed again only when it changed (a full
        poll reads every position; most did not move since the last one)."""
        raw = "\x00".join(flat)  # one string: a fifth of the list's memory per symbol
        last = self._positions.get(symbol)
        if last is not None and last[0] == raw:
            return last[1]
        pos = _position(symbol, _pairs(flat))
        self._positions[symbol] = (raw, pos)
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
        first, st = True, None
        for _ in range(50):
            out = await self._attempt(
                symbol, side, qty, client_order_id, first=first, internal=False, st=st
            )
            if isinstance(out, OrderInfo):
                return out
            st, first = out[0], first and out[1]
        raise OrderOutcomeUnknown("sim: position kept moving; order not placed")

    async def _try_market(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        coid: str,
        *,
        first: bool,
        internal: bool = False,
    ) -> OrderInfo | None:
        """One attempt (:meth:`_attempt`): the order, or None when the state it assumed was
        stale (the next attempt decides from what the script returned, remembered).
        ``internal``: a fill inside the exchange (a triggered stop), which the API's injected
        faults do not touch."""
        out = await self._attempt(symbol, side, qty, coid, first=first, internal=internal, st=None)
        return out if isinstance(out, OrderInfo) else None

    async def _attempt(
        self,
        symbol: str,
        side: Side,
        qty: Decimal,
        coid: str,
        *,
        first: bool,
        internal: bool,
        st: _State | None,
    ) -> OrderInfo | tuple[_State | None, bool]:
        """One attempt, one ``sim_order.lua`` call at most, which records the order only if
        the state it was decided from still holds. That state is ``st`` (a stale reply's),
        else what the last attempt on the symbol saw (:meth:`_remembered`: then one round
        trip in all) when it decides an order to send, else a read (position, filters,
        order and config in one round trip; a reject or fault is only ever raised on such
        fresh state). ``first``: the API's injected faults apply (latency, timeout, reject).

        Returns the order, or (the state as the script found it, None on a cluster: read
        again; whether the faults apply again: ``first`` and the config was not what was
        assumed)."""
        faults = first and not internal
        plan: OrderInfo | _Plan | None = None
        if st is None:
            st = self._remembered(symbol, faults=faults, internal=internal)
            if st is not None:
                try:
                    plan = self._plan(symbol, side, qty, coid, st, faults=faults, internal=internal)
                except (OrderRejected, OrderOutcomeUnknown):
                    st = None  # decided from memory: decided again on a fresh read
        if st is None:
            st = await self._read(symbol, coid)
        if plan is None:
            if faults:
                latency = int(st.cfg.get("latency_ms") or 0)
                if latency:
                    await asyncio.sleep(latency / 1000)
            plan = self._plan(symbol, side, qty, coid, st, faults=faults, internal=internal)
        if isinstance(plan, OrderInfo):
            return plan
        check_cfg = not internal and not self.cluster
        async with atranslate():
            res = await self._record_order(symbol, coid, st, plan, check_cfg=check_cfg)
        if res[0] == "stale":
            pos, filt, existing, cfg = (_pairs(x) for x in res[1:5])
            self._remember(symbol, pos, filt, None if self.cluster else cfg)
            if self.cluster and not internal:
                return None, False  # the config is in another slot, not in the reply: read
            again = faults and _only(cfg, CONFIG_FIELDS) != _only(st.cfg, CONFIG_FIELDS)
            return _State(pos, filt, existing, cfg), again
        if res[0] == "exists":
            return _order(_pairs(res[1]))
        pos = {**st.pos, "amt": plan.new_amt} if plan.new_amt else st.pos
        self._remember(symbol, pos, st.filt, st.cfg if check_cfg else None)
        if plan.mode == "lose_response":
            raise OrderOutcomeUnknown("sim: response lost after acceptance (injected)")
        return _order({**plan.fields, "order_id": res[1]})

    def _remembered(self, symbol: str, *, faults: bool, internal: bool) -> _State | None:
        """What the last attempt on ``symbol`` read or wrote, to decide from without a read;
        None if nothing is known, or the config is needed and not known (on a cluster it is
        not in the script's slot), or an injected latency is to be slept (after the read)."""
        seen = self._seen.get(symbol)
        if seen is None:
            return None
        if internal:
            return _State(seen[0], seen[1], None, {})
        cfg = self._cfg
        if cfg is None or self.cluster or (faults and cfg.get("latency_ms", "") not in NO_LATENCY):
            return None
        return _State(seen[0], seen[1], None, cfg)

    def _remember(
        self, symbol: str, pos: dict[str, str], filt: dict[str, str], cfg: dict[str, str] | None
    ) -> None:
        """Remember the state an attempt found or left (``cfg`` None: not known to be current)."""
        self._seen[symbol] = (_only(pos, POSITION_FIELDS), _only(filt, FILTER_FIELDS))
        if cfg is not None:
            self._cfg = _only(cfg, CONFIG_FIELDS)

    async def _read(self, symbol: str, coid: str) -> _State:
        """Position, filters, the order and the config, in one round trip; remembered."""
        async with atranslate():
            pos, filt, existing, cfg = await self._hashes(
                [
                    self.keys.sim_position(symbol),
                    self.keys.sim_filters(symbol),
                    self.keys.sim_order(symbol, coid),
                    self.keys.sim_config,
                ]
            )
        self._remember(symbol, pos, filt, cfg)
        return _State(pos, filt, existing, cfg)

    @staticmethod
    def _plan(
        symbol: str,
        side: Side,
        qty: Decimal,
        coid: str,
        st: _State,
        *,
        faults: bool,
        internal: bool,
    ) -> OrderInfo | _Plan:
        """The order decided from ``st``: the existing order (``st.existing``), a reject or
        an injected fault raised, or the order to record."""
        mode = "fill" if internal else st.cfg.get("order_mode", "fill")
        if faults:
            if mode == "timeout":
                raise OrderOutcomeUnknown("sim: request timed out (fault injected)")
            if mode == "reject":
                raise OrderRejected("sim: Margin is insufficient (fault injected)", code=-2019)
        if st.existing:
            return _order(st.existing)
        pos, filt = st.pos, st.filt
        if not filt:
            raise OrderRejected(f"sim: invalid symbol {symbol}", code=-1121)
        f = _filters_of(symbol, tuple(filt.items()))
        amt = _dec(pos.get("amt"))
        if qty <= 0 or qty % f.step_size != 0:
            raise OrderRejected(f"sim: precision is over the maximum ({qty})", code=-1111)
        if qty < f.min_qty or (f.max_qty is not None and qty > f.max_qty):
            raise OrderRejected(
                f"sim: quantity {qty} outside [{f.min_qty}, {f.max_qty}]", code=-4003
            )
        reduces = (side == "SELL" and amt > 0) or (side == "BUY" and amt < 0)
        if not reduces or qty > abs(amt):
            raise OrderRejected("sim: ReduceOnly Order is rejected.", code=-2022)
        fill = mode != "new"
        price = _dec(pos.get("mark_price"), pos.get("entry_price") or "0")
        new_amt = amt - qty if side == "SELL" else amt + qty
        now = time.time()
        fields = {
            "symbol": symbol,
            "client_order_id": coid,
            "side": side,
            "type": "MARKET",
            "status": (OrderStatus.FILLED if fill else OrderStatus.NEW).value,
            "requested_qty": fmt_decimal(qty),
            "filled_qty": fmt_decimal(qty if fill else Decimal(0)),
            "avg_price": fmt_decimal(price) if fill else "",
            "reduce_only": "true",
            "created_at": f"{now:.6f}",
        }
        fill_record = (
            {
                "symbol": symbol,
                "client_order_id": coid,
                "side": side,
                "qty": fmt_decimal(qty),
                "price": fmt_decimal(price),
                "position_before": fmt_decimal(amt),
                "position_after": fmt_decimal(new_amt),
                "ts": f"{now:.6f}",
            }
            if fill
            else {}
        )
        return _Plan(mode, fields, fill_record, fmt_decimal(new_amt) if fill else "")

    async def _hash_rows(self, keys: list[str]) -> list[list[str]]:
        """HGETALL of each key in one round trip, each as its flat reply (name, value, …; []
        when none): straight on a lean client's connection (what its pipeline would send,
        without building one), else a pipeline."""
        lean = getattr(self.redis, "lean", None)
        if lean is not None:
            replies = await lean.call_many([(("HGETALL", k), False) for k in keys])
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise error_of(reply)
            return cast("list[list[str]]", replies)
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        return [[x for kv in h.items() for x in kv] for h in await pipe.execute()]

    async def _hashes(self, keys: list[str]) -> list[dict[str, str]]:
        """:meth:`_hash_rows` as dicts."""
        return [_pairs(row) for row in await self._hash_rows(keys)]

    async def _record_order(
        self, symbol: str, coid: str, st: _State, plan: _Plan, *, check_cfg: bool
    ) -> list[Any]:
        """Run ``sim_order.lua`` with the assumptions of ``st`` (the config's if
        ``check_cfg``). On a Redis Cluster the config and the fills stream are in other
        slots: the script records the order and moves the position (the source of truth),
        and the fill record follows, added once, by the one call whose script created the
        order."""
        pos_key = self.keys.sim_position(symbol)
        keys = [
            pos_key,
            self.keys.sim_order(symbol, coid),
            self.keys.sim_order_seq(symbol),
            self.keys.sim_filters(symbol),
        ]
        argv: list[Any] = [
            self.order_ttl_s,
            plan.new_amt,
            *flat_pairs({f: st.pos.get(f, "") for f in POSITION_FIELDS}),
            *(flat_pairs({f: st.cfg.get(f, "") for f in CONFIG_FIELDS}) if check_cfg else ["0"]),
            *flat_pairs({f: st.filt.get(f, "") for f in FILTER_FIELDS}),
            *flat_pairs(plan.fields),
            *flat_pairs(plan.fill_record),
        ]
        if not self.cluster:
            res: list[Any] = await self.scripts.sim_order(
                keys=[*keys, self.keys.sim_config, self.keys.sim_fills], args=argv
            )
            return res
        res = await self.scripts.sim_order(keys=keys, args=argv)
        if plan.fill_record and res[0] == "ok":
            await self.redis.xadd(
                self.keys.sim_fills,
                {"order_id": res[1], **plan.fill_record},
                maxlen=100_000,
                approximate=True,
            )
        return res

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
