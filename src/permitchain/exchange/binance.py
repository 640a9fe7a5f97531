"""Binance USDⓈ-M futures through async ccxt (``binanceusdm``), behind the ``Exchange`` protocol.

ccxt does the transport, signing, clock offset and error mapping; we call its implicit
endpoint methods with exactly the parameters Binance documents and parse the raw answers
ourselves, so every quantity and price stays a ``Decimal`` from the wire (ccxt's unified
structures use floats).

* ``EXCHANGE=binance-demo`` uses ccxt's demo-trading URLs, ``EXCHANGE=binance`` the live
  ones. ``base_url`` (``BINANCE_BASE_URL``) points every URL of both tables at another host
  (tests use a fake on 127.0.0.1), and the linear error table keeps applying to it: stock
  ccxt picks that table by hostname and would otherwise map e.g. -2022 to a bare error.
* Position mode: read from ``GET /fapi/v1/positionSide/dual`` (refreshed every
  ``REFRESH_S`` and after -4061), unless fixed with ``hedge_mode``. One-way orders carry
  ``reduceOnly=true``; hedge-mode orders carry ``positionSide`` LONG/SHORT instead.
* Stops (UPDATE_SL) are conditional orders, which Binance only takes on the algo endpoints
  (``/fapi/v1/algoOrder``); after placing one we cancel our previous stops on that symbol.
  The trigger is rounded to the tick away from the mark (a SELL stop down, a BUY stop up);
  a stop the mark has already passed is refused by Binance (-2021/-4142):
  ``StopWouldTrigger``. Their lifecycle (NEW, TRIGGERING, TRIGGERED, FINISHED, CANCELED,
  REJECTED, EXPIRED) maps onto ``OrderStatus`` in ``parse_algo_order``.
* An order is sent once per client order id by this process: a second call with the same id
  looks it up and, when the look-up finds nothing, raises ``OrderOutcomeUnknown`` (the
  resolver finishes it) — never a second request, since Binance refuses an id only among
  *open* orders and would execute a filled one's id again.
* The usage headers of each answer (``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-10S/1M``)
  are kept (``rate_usage()``); above ``WEIGHT_WARN`` of the minute's weight a warning is logged.
* Every ccxt error, and every answer we cannot parse, becomes one of ours in ``_call``
  (the one boundary), keeping Binance's code.
* ccxt's client-side throttle is off by default (``rate_limit``): its leaky bucket turns the
  weight of one request into a wait before the *next* one (GET positionSide/dual weighs 30:
  1.5 s added to the order that follows it). Our volume (one positionRisk per poll, a few
  orders an hour) is far below Binance's limits, and 429/418 arrive as ``RateLimited``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal
from typing import Any, Literal

import ccxt.async_support as ccxt_async
from ccxt.base import errors as cx

from permitchain.contract.errors import (
    ClockSkew,
    ExchangeError,
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    OrderRejected,
    RateLimited,
    StopWouldTrigger,
)
from permitchain.contract.models import fmt_decimal
from permitchain.exchange.base import OrderInfo, OrderStatus, PositionInfo, Side, SymbolFilters
from permitchain.exchange.base import round_down as round_qty_down

log = logging.getLogger("permitchain.exchange.binance")

Kind = Literal["read", "order"]
REFRESH_S = 300.0  # filters, position mode and clock offset
OWN_PREFIX = "pc-"  # our client order ids (apply_layer.executor.client_order_id)
DUPLICATE_CODES = {-4116, -20132}  # client (algo) id already used: the order exists
UNKNOWN_CODES = {-1006, -1007}  # "execution status unknown"
RATE_CODES = {-1003, -1015}
CLOCK_CODE, NOT_FOUND_CODE, MODE_CODE = -1021, -2013, -4061
#: precision (-1111), quantity not a multiple of the step (-4023), price not a multiple of
#: the tick (-4014): the filters may have changed, read them again
FILTER_CODES = {-1111, -4023, -4014}
IMMEDIATE_TRIGGER_CODES = {-2021, -4142}  # the stop's trigger is already passed
ORDER_FILTERS_MAX_AGE_S = 3600.0  # orders use cached filters this long (see FILTER_CODES)
ORDER_STATUS = {s.value: s for s in OrderStatus} | {"EXPIRED_IN_MATCH": OrderStatus.EXPIRED}
#: Conditional orders still working: not yet in the matching engine (NEW, TRIGGERING), or in
#: it with the outcome of their market order not known yet (TRIGGERED).
ALGO_WORKING = ("NEW", "TRIGGERING", "TRIGGERED")
ALGO_FINAL = {
    "CANCELED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
}
SENT_MAX = 10_000  # client order ids this process remembers having sent
WEIGHT_LIMIT_1M, WEIGHT_WARN = 2400, 0.8  # Binance's request weight per minute (per IP)
USAGE_HEADER = re.compile(r"^x-mbx-(used-weight|order-count)-(\d+[smhd])$", re.IGNORECASE)


class _Client(ccxt_async.binanceusdm):  # type: ignore[misc]
    """ccxt's client, plus: the linear error table for our base URL, and the HTTP status,
    Binance code and Retry-After recorded on every error it raises (read by ``translate``)."""

    def __init__(self, config: dict[str, Any], base_url: str | None) -> None:
        super().__init__(config)
        self.pc_base = base_url

    def get_exceptions_by_url(self, url: str | None, exact_or_broad: str) -> Any:
        if self.pc_base and url and url.startswith(self.pc_base + "/fapi/"):
            return self.safe_dict(self.safe_dict(self.exceptions, "linear", {}), exact_or_broad, {})
        return super().get_exceptions_by_url(url, exact_or_broad)

    def handle_errors(self, *args: Any) -> Any:
        # args: status, reason, url, method, headers, body, json response, request headers, body
        try:
            return super().handle_errors(*args)
        except cx.BaseError as e:
            _annotate(e, args[0], args[4], args[6] if args[6] is not None else args[5])
            raise

    def handle_http_status_code(self, *args: Any) -> Any:
        # args: status, reason, url, method, body
        try:
            return super().handle_http_status_code(*args)
        except cx.BaseError as e:
            _annotate(e, args[0], None, args[4])
            raise


def _annotate(e: Exception, status: int, headers: Any, response: Any) -> None:
    """Record the HTTP status, Binance's code and message, and Retry-After on ``e``.
    ``response``: the parsed JSON answer, or the body as text."""
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError:
            response = None
    e.pc_msg = response.get("msg") if isinstance(response, dict) else None  # type: ignore[attr-defined]
    try:
        bcode: int | None = int(response["code"]) if isinstance(response, dict) else None
    except (KeyError, TypeError, ValueError):
        bcode = None
    retry = (headers or {}).get("Retry-After")
    e.pc_status = status  # type: ignore[attr-defined]
    e.pc_code = bcode if bcode not in (0, 200) else None  # type: ignore[attr-defined]
    e.pc_retry_after = float(retry) if retry and retry.isdigit() else None  # type: ignore[attr-defined]


def translate(e: Exception, kind: Kind) -> ExchangeError:
    """A ccxt (or socket) error → ours. ``kind='order'``: the request placed an order."""
    status: int | None = getattr(e, "pc_status", None)
    bcode: int | None = getattr(e, "pc_code", None)
    code = bcode if bcode is not None else (status if status and status >= 400 else None)
    msg = "binance: " + re.sub(r"signature=[0-9a-f]+", "signature=…", str(e) or type(e).__name__)
    if isinstance(e, cx.DDoSProtection) or status in (418, 429) or bcode in RATE_CODES:
        default = 60.0 if status == 418 else 1.0
        return RateLimited(
            msg, code=code, retry_after_s=getattr(e, "pc_retry_after", None) or default
        )
    if bcode == CLOCK_CODE or isinstance(e, cx.InvalidNonce):
        return ClockSkew(msg, code=code)
    if kind == "read":
        return ExchangeUnavailable(msg, code=code)
    if status == 503 and getattr(e, "pc_msg", None) == "Service Unavailable.":
        # Binance: "Service Unavailable." is a failure (not executed); only "Unknown error,
        # please check your request or try again later." leaves the outcome unknown
        return OrderRejected(msg, code=status)
    if bcode in IMMEDIATE_TRIGGER_CODES:
        return StopWouldTrigger(msg, code=bcode)
    if bcode is None or bcode in UNKNOWN_CODES or (status or 0) >= 500:
        return OrderOutcomeUnknown(msg, code=code)  # timeout, network, 5xx: it may exist
    return OrderRejected(msg, code=code)  # Binance answered 4xx with a code: not placed


def _d(v: Any, default: str = "0") -> Decimal:
    return Decimal(str(v)) if v not in (None, "") else Decimal(default)


def parse_filters(info: dict[str, Any]) -> dict[str, SymbolFilters]:
    """exchangeInfo → filters of every TRADING symbol. We send MARKET orders, so the market
    filter binds too: the step is the coarser of LOT_SIZE and MARKET_LOT_SIZE (equal on
    Binance today), the maximum is MARKET_LOT_SIZE's."""
    out: dict[str, SymbolFilters] = {}
    for s in info.get("symbols", []):
        if s.get("status") != "TRADING":
            continue
        f = {x["filterType"]: x for x in s.get("filters", [])}
        lot = f.get("LOT_SIZE", {})
        mkt = f.get("MARKET_LOT_SIZE", lot)
        out[s["symbol"]] = SymbolFilters(
            symbol=s["symbol"],
            step_size=max(_d(lot.get("stepSize")), _d(mkt.get("stepSize"))),
            min_qty=max(_d(lot.get("minQty")), _d(mkt.get("minQty"))),
            max_qty=_d(mkt["maxQty"]) if mkt.get("maxQty") else None,
            min_notional=_d(f.get("MIN_NOTIONAL", {}).get("notional")),
            tick_size=_d(f.get("PRICE_FILTER", {}).get("tickSize"), "0.01"),
        )
    return out


def parse_positions(
    rows: Iterable[dict[str, Any]], listed: Iterable[str], wanted: Sequence[str] | None
) -> dict[str, PositionInfo]:
    """positionRisk v3 rows → one PositionInfo per wanted symbol (every listed symbol when
    ``wanted`` is None; flat ones with amt 0 and prices 0). A hedge-mode symbol holding both
    a long and a short is left out: the chain has one position per symbol, and a missing
    snapshot makes P3.3 deny (fail closed)."""
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if _d(r.get("positionAmt")) != 0:
            by_symbol.setdefault(r["symbol"], []).append(r)
    known = set(listed) | by_symbol.keys()
    out: dict[str, PositionInfo] = {}
    for sym in sorted(known if wanted is None else known.intersection(wanted)):
        held = by_symbol.get(sym, [])
        if len(held) > 1:
            log.warning("%s: long and short held at once (hedge mode); no snapshot", sym)
            continue
        if not held:
            out[sym] = PositionInfo(sym, Decimal(0), Decimal(0), Decimal(0))
            continue
        r = held[0]
        margin = _d(r.get("positionInitialMargin"))
        lev = abs(_d(r.get("notional"))) / margin if margin > 0 else Decimal(1)
        out[sym] = PositionInfo(
            symbol=sym,
            amt=_d(r.get("positionAmt")),
            entry_price=_d(r.get("entryPrice")),
            mark_price=_d(r.get("markPrice")),
            leverage=max(Decimal(1), lev.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)),
            unrealized_pnl=_d(r.get("unRealizedProfit")),
        )
    return out


def _reduce_flag(raw: dict[str, Any]) -> bool:
    hedge_close = (raw.get("positionSide"), raw.get("side")) in (("LONG", "SELL"), ("SHORT", "BUY"))
    return bool(raw.get("reduceOnly")) or hedge_close


def parse_order(raw: dict[str, Any]) -> OrderInfo:
    """A plain order (``/fapi/v1/order``). An unknown status reads as NEW: not final."""
    avg, stop_price = _d(raw.get("avgPrice")), _d(raw.get("stopPrice"))
    return OrderInfo(
        symbol=raw["symbol"],
        client_order_id=raw["clientOrderId"],
        order_id=str(raw["orderId"]),
        side=raw["side"],
        type=raw.get("type", ""),
        status=ORDER_STATUS.get(raw.get("status", ""), OrderStatus.NEW),
        requested_qty=_d(raw.get("origQty")),
        filled_qty=_d(raw.get("executedQty")),
        avg_price=avg if avg > 0 else None,
        reduce_only=_reduce_flag(raw),
        stop_price=stop_price if stop_price > 0 else None,
    )


def algo_status(raw_status: str, qty: Decimal, filled: Decimal) -> OrderStatus:
    """A conditional order's status as ours. Working (NEW, TRIGGERING, TRIGGERED, or any
    status we do not know): NEW, or PARTIALLY_FILLED once its market order filled some.
    FINISHED means its market order was filled *or cancelled* in the matching engine: FILLED
    when ``actualQty`` covers the quantity, else CANCELED (with what was filled)."""
    if raw_status == "FINISHED":
        return OrderStatus.FILLED if qty > 0 and filled >= qty else OrderStatus.CANCELED
    if raw_status in ALGO_FINAL:
        return ALGO_FINAL[raw_status]
    return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW


def parse_algo_order(raw: dict[str, Any]) -> OrderInfo:
    """A conditional (algo) order: ``quantity``, ``triggerPrice``, and once triggered the
    market order's ``actualOrderId``/``actualQty``/``actualPrice`` (Binance sends no
    ``executedQty``/``avgPrice`` for these)."""
    qty, filled = _d(raw.get("quantity")), _d(raw.get("actualQty"))
    avg, trigger = _d(raw.get("actualPrice")), _d(raw.get("triggerPrice"))
    return OrderInfo(
        symbol=raw["symbol"],
        client_order_id=raw["clientAlgoId"],
        order_id=str(raw["algoId"]),
        side=raw["side"],
        type=raw.get("orderType", ""),
        status=algo_status(str(raw.get("algoStatus", "")), qty, filled),
        requested_qty=qty,
        filled_qty=filled,
        avg_price=avg if avg > 0 else None,
        reduce_only=_reduce_flag(raw),
        stop_price=trigger if trigger > 0 else None,
    )


def _point_urls(urls: dict[str, Any], base: str) -> None:
    """Every URL of a ccxt url table → the same path on ``base``."""
    for key, url in list(urls.items()):
        if isinstance(url, str) and url.startswith("https://"):
            urls[key] = base + "/" + url.split("/", 3)[3]


class BinanceExchange:
    """The ``Exchange`` protocol on Binance USDⓈ-M futures (demo trading or live)."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        demo: bool,
        base_url: str | None = None,
        hedge_mode: bool | None = None,
        timeout_s: float = 10.0,
        recv_window_ms: int = 5000,
        rate_limit: bool = False,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.name = "binance-demo" if demo else "binance"
        base = base_url.rstrip("/") if base_url else None
        self._api = _Client(
            {
                "apiKey": api_key,
                "secret": api_secret,
                "timeout": int(timeout_s * 1000),
                "enableRateLimit": rate_limit,
                "options": {"recvWindow": recv_window_ms},
            },
            base,
        )
        if demo:
            self._api.enable_demo_trading(True)
        if base is not None:
            for table in ("api", "demo", "test"):
                _point_urls(self._api.urls[table], base)
            if base.startswith("http://"):
                self._api.timeout_on_exit = 0  # ccxt waits 250 ms on close for TLS only
        self._fixed_mode = hedge_mode
        self._hedge: bool | None = hedge_mode
        self._filters: dict[str, SymbolFilters] = {}
        self.refresh_s = refresh_s
        self._filters_at = self._mode_at = self._clock_at = float("-inf")
        #: client order ids this process sent (oldest first): never sent a second time
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._usage: dict[str, int] = {}

    def __repr__(self) -> str:  # never show the keys
        return f"BinanceExchange(name={self.name!r}, url={self._api.urls['api']['fapiPublic']!r})"

    # -- the boundary ----------------------------------------------------------------------
    async def _call(
        self,
        kind: Kind,
        method: str,
        params: dict[str, str] | None = None,
        *,
        parse: Callable[[Any], Any] = lambda raw: raw,
        missing_ok: bool = False,
    ) -> Any:
        """Call a ccxt method and parse its answer; translate every failure (the one place
        this happens). With ``missing_ok``, "order does not exist" (-2013) returns None."""
        try:
            raw = await getattr(self._api, method)(params or {})
        except (cx.BaseError, OSError) as e:
            err = translate(e, kind)
            if missing_ok and (err.code == NOT_FOUND_CODE or isinstance(e, cx.OrderNotFound)):
                return None
            if isinstance(err, ClockSkew):
                await self._resync_clock()
            if err.code == MODE_CODE and self._fixed_mode is None:
                self._mode_at = float("-inf")  # position mode changed under us: read it again
            if err.code in FILTER_CODES:
                self._filters_at = float("-inf")  # filters may have changed: read them again
            raise err from e
        finally:
            self._read_usage()
        try:
            return parse(raw)
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as e:
            unexpected = OrderOutcomeUnknown if kind == "order" else ExchangeUnavailable
            raise unexpected(f"binance: {method}: unexpected answer ({e!r})") from e

    def _read_usage(self) -> None:
        """Keep the usage headers of the last answer (``X-MBX-USED-WEIGHT-1M`` etc.)."""
        headers = getattr(self._api, "last_response_headers", None) or {}
        for name, value in headers.items():
            m = USAGE_HEADER.match(str(name))
            if m is not None and str(value).isdigit():
                key = f"{m.group(1).replace('-', '_')}_{m.group(2)}".lower()
                self._usage[key] = int(value)
        weight = self._usage.get("used_weight_1m", 0)
        if weight > WEIGHT_LIMIT_1M * WEIGHT_WARN:
            log.warning("binance: request weight %d of %d this minute", weight, WEIGHT_LIMIT_1M)

    def rate_usage(self) -> dict[str, int]:
        """The usage Binance reported on its last answer: ``used_weight_1m``,
        ``order_count_10s``, ``order_count_1m`` (absent until an answer carried them)."""
        return dict(self._usage)

    def _mark_sent(self, client_order_id: str) -> bool:
        """Remember an id as sent; False when it was sent before (by this process)."""
        if client_order_id in self._sent:
            return False
        self._sent[client_order_id] = None
        if len(self._sent) > SENT_MAX:
            self._sent.popitem(last=False)
        return True

    async def _resync_clock(self) -> None:
        try:
            await self._call("read", "load_time_difference")
            self._clock_at = time.monotonic()
            log.info("binance: clock offset %s ms", self._api.options.get("timeDifference"))
        except ExchangeError as e:
            log.warning("binance: clock resync failed: %s", e)

    async def _ready(self, *, orders: bool) -> None:
        now = time.monotonic()
        if now - self._clock_at > self.refresh_s:
            await self._resync_clock()
        if orders and self._fixed_mode is None and now - self._mode_at > self.refresh_s:
            self._hedge = await self._call(
                "read",
                "fapiPrivateGetPositionSideDual",
                parse=lambda raw: bool(raw["dualSidePosition"]),
            )
            self._mode_at = now

    def _closing(self, side: Side) -> dict[str, str]:
        if self._hedge:
            return {"positionSide": "LONG" if side == "SELL" else "SHORT"}
        return {"reduceOnly": "true"}

    # -- reads -----------------------------------------------------------------------------
    async def filters(self, symbols: Sequence[str] | None = None) -> dict[str, SymbolFilters]:
        if time.monotonic() - self._filters_at > self.refresh_s or not self._filters:
            self._filters = await self._call(
                "read", "fapiPublicGetExchangeInfo", parse=parse_filters
            )
            self._filters_at = time.monotonic()
        if symbols is None:
            return dict(self._filters)
        return {s: self._filters[s] for s in symbols if s in self._filters}

    async def fetch_positions(
        self, symbols: Sequence[str] | None = None
    ) -> dict[str, PositionInfo]:
        listed = await self.filters()
        await self._ready(orders=False)
        positions: dict[str, PositionInfo] = await self._call(
            "read",
            "fapiPrivateV3GetPositionRisk",
            parse=lambda rows: parse_positions(rows, listed, symbols),
        )
        return positions

    async def mark_prices(self, symbols: Sequence[str] | None = None) -> dict[str, Decimal]:
        want = None if symbols is None else set(symbols)
        prices: dict[str, Decimal] = await self._call(
            "read",
            "fapiPublicGetPremiumIndex",
            parse=lambda rows: {
                r["symbol"]: _d(r["markPrice"]) for r in rows if want is None or r["symbol"] in want
            },
        )
        return prices

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        """A plain order, else a conditional (algo) one, with this client id; else None."""
        order = await self._fetch_plain(symbol, client_order_id)
        return order if order is not None else await self._fetch_algo(client_order_id)

    async def _fetch_plain(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        await self._ready(orders=False)
        order: OrderInfo | None = await self._call(
            "read",
            "fapiPrivateGetOrder",
            {"symbol": symbol, "origClientOrderId": client_order_id},
            parse=parse_order,
            missing_ok=True,
        )
        return order

    async def _fetch_algo(self, client_order_id: str) -> OrderInfo | None:
        order: OrderInfo | None = await self._call(
            "read",
            "fapiPrivateGetAlgoOrder",
            {"clientAlgoId": client_order_id},
            parse=parse_algo_order,
            missing_ok=True,
        )
        return order

    # -- orders ----------------------------------------------------------------------------
    async def _order_qty(self, symbol: str, qty: Decimal) -> tuple[SymbolFilters, str]:
        fresh = time.monotonic() - self._filters_at < ORDER_FILTERS_MAX_AGE_S
        f = self._filters.get(symbol) if fresh else None  # no exchangeInfo on every order
        if f is None:
            f = (await self.filters([symbol])).get(symbol)
        if f is None:
            raise OrderRejected(f"binance: {symbol} is not a trading symbol", code=-1121)
        q = round_qty_down(qty, f.step_size)
        if q <= 0:
            raise OrderRejected(f"binance: {symbol} qty {qty} is below one step {f.step_size}")
        await self._ready(orders=True)
        return f, fmt_decimal(q)

    async def _place(
        self,
        method: str,
        params: dict[str, str],
        client_order_id: str,
        parse: Callable[[dict[str, Any]], OrderInfo],
        lookup: Callable[[], Awaitable[OrderInfo | None]],
    ) -> OrderInfo:
        """Send once per client order id. Sent before by this process, or refused as a
        duplicate (-4116: an open order has it): the order is looked up; not found, its
        outcome is unknown (``OrderOutcomeUnknown``: the resolver finishes it). Never a
        second request: Binance refuses an id only among *open* orders, so a filled
        order's id sent again would execute again."""
        if not self._mark_sent(client_order_id):
            found = await self._lookup_quietly(lookup)
            if found is not None:
                return found
            raise OrderOutcomeUnknown(
                f"binance: {client_order_id} was sent before and is not found: not sent again"
            )
        try:
            order: OrderInfo = await self._call("order", method, params, parse=parse)
            return order
        except OrderRejected as e:
            if e.code not in DUPLICATE_CODES:
                self._sent.pop(client_order_id, None)  # refused: nothing was placed
                raise
            found = await self._lookup_quietly(lookup)
            if found is not None:
                return found
            raise OrderOutcomeUnknown(
                f"binance: {client_order_id} duplicated but not found: {e}", code=e.code
            ) from e

    @staticmethod
    async def _lookup_quietly(
        lookup: Callable[[], Awaitable[OrderInfo | None]],
    ) -> OrderInfo | None:
        try:
            return await lookup()
        except ExchangeError as e:
            log.warning("binance: look-up failed: %s", e)
            return None

    async def place_reduce_only_market(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        _, q = await self._order_qty(symbol, qty)
        params = {
            "symbol": symbol,
            "side": side,
            "type": "MARKET",
            "quantity": q,
            "newClientOrderId": client_order_id,
            "newOrderRespType": "RESULT",
            **self._closing(side),
        }
        return await self._place(
            "fapiPrivatePostOrder",
            params,
            client_order_id,
            parse_order,
            lambda: self._fetch_plain(symbol, client_order_id),
        )

    async def place_stop_market(
        self, symbol: str, side: Side, stop_price: Decimal, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        """Place the stop, then cancel our previous stops on the symbol and side. The
        trigger is rounded to the tick away from the mark (a SELL stop down, a BUY stop up):
        rounding never moves it to the side where it would trigger at once."""
        f, q = await self._order_qty(symbol, qty)
        rounding = ROUND_DOWN if side == "SELL" else ROUND_UP
        trigger = (stop_price / f.tick_size).to_integral_value(rounding=rounding) * f.tick_size
        order = await self._fetch_algo(client_order_id)
        if order is None:
            params = {
                "algoType": "CONDITIONAL",
                "symbol": symbol,
                "side": side,
                "type": "STOP_MARKET",
                "quantity": q,
                "triggerPrice": fmt_decimal(trigger),
                "workingType": "MARK_PRICE",
                "clientAlgoId": client_order_id,
                **self._closing(side),
            }
            order = await self._place(
                "fapiPrivatePostAlgoOrder",
                params,
                client_order_id,
                parse_algo_order,
                lambda: self._fetch_algo(client_order_id),
            )
        await self._cancel_previous_stops(symbol, side, keep=client_order_id)
        return order

    async def _cancel_previous_stops(self, symbol: str, side: Side, keep: str) -> None:
        """Cancel our other open stops on this symbol and side (after the new one is in
        place, so the position is never without a stop). Failures are logged, not raised."""
        try:
            stops = await self._call(
                "read",
                "fapiPrivateGetOpenAlgoOrders",
                {"symbol": symbol},
                parse=lambda rows: [
                    (str(o["clientAlgoId"]), str(o["algoId"]))
                    for o in rows
                    if o["side"] == side and o["orderType"] == "STOP_MARKET"
                ],
            )
            for coid, algo_id in stops:
                if coid.startswith(OWN_PREFIX) and coid != keep:
                    await self._call("order", "fapiPrivateDeleteAlgoOrder", {"algoId": algo_id})
                    log.info("binance: %s: cancelled previous stop %s", symbol, coid)
        except ExchangeError as e:
            log.warning("binance: %s: previous stop not cancelled: %s", symbol, e)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        """Cancel a conditional (algo) order with this id, else a plain one. An order no
        longer open (-2011) or unknown (-2013) is not an error: it is returned as it stands
        (None when the exchange has none)."""
        algo = await self._fetch_algo(client_order_id)
        if algo is not None:
            if algo.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
                await self._cancel_quietly(
                    "fapiPrivateDeleteAlgoOrder", {"clientAlgoId": client_order_id}
                )
                algo = await self._fetch_algo(client_order_id) or algo
            return algo
        plain = await self._fetch_plain(symbol, client_order_id)
        if plain is not None and plain.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
            await self._cancel_quietly(
                "fapiPrivateDeleteOrder", {"symbol": symbol, "origClientOrderId": client_order_id}
            )
            plain = await self._fetch_plain(symbol, client_order_id) or plain
        return plain

    async def _cancel_quietly(self, method: str, params: dict[str, str]) -> None:
        try:
            await self._call("order", method, params)
        except OrderRejected as e:
            if e.code not in (-2011, NOT_FOUND_CODE):  # already gone: fine
                raise

    async def position_mode(self) -> str:
        """``hedge`` or ``one-way``, read now (``GET /fapi/v1/positionSide/dual``)."""
        hedge: bool = await self._call(
            "read",
            "fapiPrivateGetPositionSideDual",
            parse=lambda raw: bool(raw["dualSidePosition"]),
        )
        return "hedge" if hedge else "one-way"

    async def resting_reduce_only(self, positions: dict[str, PositionInfo]) -> dict[str, Decimal]:
        """Per symbol with a position: the open quantity of the plain reduce-only orders
        resting on its closing side (they count against the position: a close beyond what
        they leave is refused, -4118). One ``GET /fapi/v1/openOrders`` (weight 40); untriggered
        conditional orders are not in it and do not count."""
        held = {s: p.amt for s, p in positions.items() if p.amt != 0}
        if not held:
            return {}
        orders: list[OrderInfo] = await self._call(
            "read",
            "fapiPrivateGetOpenOrders",
            {},
            parse=lambda rows: [parse_order(r) for r in rows],
        )
        out: dict[str, Decimal] = {}
        for o in orders:
            amt = held.get(o.symbol)
            closing = amt is not None and o.side == ("SELL" if amt > 0 else "BUY")
            if (
                closing
                and o.reduce_only
                and o.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
            ):
                out[o.symbol] = out.get(o.symbol, Decimal(0)) + o.requested_qty - o.filled_qty
        return out

    async def open_orders(self, symbol: str | None = None) -> list[OrderInfo]:
        """Open plain orders, then open conditional ones (two requests; without a symbol
        the plain list weighs 40)."""
        params = {"symbol": symbol} if symbol is not None else {}
        plain: list[OrderInfo] = await self._call(
            "read",
            "fapiPrivateGetOpenOrders",
            params,
            parse=lambda rows: [parse_order(r) for r in rows],
        )
        algos: list[OrderInfo] = await self._call(
            "read",
            "fapiPrivateGetOpenAlgoOrders",
            params,
            parse=lambda rows: [parse_algo_order(r) for r in rows],
        )
        return plain + algos

    async def close(self) -> None:
        await self._api.close()
