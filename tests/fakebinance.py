"""A fake Binance USDⓈ-M futures REST server for tests (aiohttp, 127.0.0.1 only).

It speaks the endpoints our adapter and ccxt's ``binanceusdm`` use, checks every signed
request the way Binance does (``X-MBX-APIKEY``, HMAC-SHA256 over query string + body,
``timestamp`` inside ``recvWindow`` → -1021), and keeps its own position book. It is as
strict as Binance documents (docs/exchanges.md §6 lists each rule and what was assumed where
Binance's material is silent):

* parameters: an unknown one -1104; enum values exactly as documented (side -1117, type
  -1116, positionSide -4060, reduceOnly ``true``/``false`` -4062, timeInForce -1115,
  workingType -4031, newOrderRespType -1136); a client order id outside
  ``^[.A-Z:/a-z0-9_-]{1,36}$`` -4015; numbers with an exponent -1100;
* filters: more decimals than the step/tick -1111, not a multiple of the step -4023 or of
  the tick -4014, below the minimum quantity -4004, not above zero -4003, above the maximum
  -4005;
* a client order id is refused (-4116) only while an order with it is *open*; plain and
  algo orders each have their own ids;
* reduce-only: an order that would not reduce (or is bigger than the position) -2022; one
  that with the resting reduce-only orders of its side would close more than is held -4118
  (untriggered conditional orders do not count);
* market orders fill at the mark (or, injected with ``set_market_outcome``, expire unfilled,
  expire in match, or fill partly and expire); stop orders on ``/fapi/v1/order`` are refused
  (-4120, they live on the algo endpoints since 2025-12); a stop that would trigger at once
  is refused (-2021, or -4142 after ``set_immediate_trigger_code``);
* conditional (algo) orders go NEW → TRIGGERING → TRIGGERED → FINISHED when the mark crosses
  them (``set_price``), with ``actualOrderId``/``actualQty``/``actualPrice``; EXPIRED when
  there is nothing left to reduce; ``set_algo_state`` forces any status;
* the user data stream: ``/fapi/v1/listenKey`` (POST create — the live key is returned —
  PUT keep-alive, -1125 once gone, DELETE), a websocket on ``/private/ws?listenKey=…`` (ccxt's
  URL) and ``/ws/<listenKey>``, ``ORDER_TRADE_UPDATE`` / ``ACCOUNT_UPDATE`` / ``ALGO_UPDATE``
  as positions and orders change, ``listenKeyExpired`` (``expire_listen_key``); faults
  ``set_stream_fault`` (drop mid-fill, duplicate, reorder), ``disconnect_streams``,
  ``set_stream_refused``;
* every answer carries ``X-MBX-USED-WEIGHT-1M``, order answers ``X-MBX-ORDER-COUNT-10S`` and
  ``-1M``; unknown paths answer 404 with the path in the message (and are recorded in
  ``unknown_paths``).

Two ways to run it:

* in-process: ``fake = FakeBinance(); url = fake.start()`` (own thread and event loop);
  the test calls ``fake.set_position(...)`` etc. directly, then ``fake.stop()``.
* as a process: ``python tests/fakebinance.py --port 0`` prints ``FAKEBINANCE_URL=<url>``
  and serves until SIGTERM/SIGINT; control it with ``AdminClient(url).call("set_position",
  symbol="BTCUSDT", amt="0.062")`` (POST ``/_admin/<method>`` with JSON keyword arguments).

Faults (``fail_next``): an error code/status on the next N matching requests, optionally
after the request was carried out (``accept=True``: the order exists, the caller sees the
error), 429/418 with ``Retry-After``, 5xx, ``hang`` (carry out, then never answer until the
client gives up), ``drop`` (carry out, then close the connection), ``garbage`` (carry out,
answer 200 with an unexpected body), ``unknown503`` (carry out, answer Binance's 503
"Unknown error, please check your request or try again later.": execution status unknown)
or ``unavailable503`` (not carried out, 503 "Service Unavailable.": a failure), plus
``delay_ms`` on every request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

API_KEY = "fake-api-key"
API_SECRET = "fake-api-secret"
NUMBER_RE = re.compile(r"^\d{1,20}(\.\d{1,20})?$")
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
HANG_S = 30.0
OPEN = ("NEW", "PARTIALLY_FILLED")
ALGO_OPEN = ("NEW", "TRIGGERING", "TRIGGERED")
# The parameters each order endpoint reads (Binance's New Order / New Algo Order pages); any
# other is refused -1104. ccxt adds timestamp, recvWindow and signature.
SIGNING = {"timestamp", "recvWindow", "signature"}
ORDER_PARAMS = SIGNING | {
    "symbol",
    "side",
    "positionSide",
    "type",
    "timeInForce",
    "quantity",
    "reduceOnly",
    "price",
    "newClientOrderId",
    "stopPrice",
    "closePosition",
    "activationPrice",
    "callbackRate",
    "workingType",
    "priceProtect",
    "newOrderRespType",
    "priceMatch",
    "selfTradePreventionMode",
    "goodTillDate",
}
ALGO_PARAMS = SIGNING | {
    "algoType",
    "symbol",
    "side",
    "positionSide",
    "type",
    "timeInForce",
    "quantity",
    "price",
    "triggerPrice",
    "workingType",
    "priceMatch",
    "closePosition",
    "priceProtect",
    "reduceOnly",
    "activatePrice",
    "callbackRate",
    "clientAlgoId",
    "selfTradePreventionMode",
    "goodTillDate",
}
ENUMS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "side": (("BUY", "SELL"), -1117, "Invalid side."),
    "positionSide": (("BOTH", "LONG", "SHORT"), -4060, "Invalid position side."),
    "reduceOnly": (("true", "false"), -4062, "Invalid or improper reduceOnly value."),
    "timeInForce": (("GTC", "IOC", "FOK", "GTX", "GTD"), -1115, "Invalid timeInForce."),
    "workingType": (("MARK_PRICE", "CONTRACT_PRICE"), -4031, "Invalid parameter working type"),
    "newOrderRespType": (("ACK", "RESULT"), -1136, "Invalid newOrderRespType."),
    "algoType": (("CONDITIONAL",), -1116, "Invalid algoType."),
    "priceProtect": (
        ("TRUE", "FALSE", "true", "false"),
        -1130,
        "Data sent for parameter 'priceProtect' is not valid.",
    ),
}
#: Request weights (Binance's per-endpoint table, the ones we use; others weigh 1).
WEIGHTS = {
    "/fapi/v3/positionRisk": 5,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/positionSide/dual": 30,
    "/fapi/v2/account": 5,
    "/fapi/v3/account": 5,
}

DEFAULT_SYMBOLS: dict[str, dict[str, str]] = {
    "BTCUSDT": {
        "step_size": "0.001",
        "min_qty": "0.001",
        "max_qty": "1000",
        "market_max_qty": "120",
        "min_notional": "100",
        "tick_size": "0.1",
        "price": "100",
    },
    "ETHUSDT": {
        "step_size": "0.001",
        "min_qty": "0.001",
        "max_qty": "10000",
        "market_max_qty": "2000",
        "min_notional": "20",
        "tick_size": "0.01",
        "price": "2500",
    },
    "SOLUSDT": {
        "step_size": "1",
        "min_qty": "1",
        "max_qty": "1000000",
        "market_max_qty": "5000",
        "min_notional": "5",
        "tick_size": "0.01",
        "price": "150",
    },
}


class FakeError(Exception):
    """An error answer: HTTP status and Binance's ``{"code", "msg"}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


@dataclass
class Fault:
    count: int
    path: str | None = None
    method: str | None = None
    code: int | None = None
    msg: str = "injected fault"
    status: int = 400
    accept: bool = False  # carry the request out before answering with the error
    mode: str = "error"  # error | hang | drop | garbage (these three carry the request out)
    retry_after_s: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.path is None or self.path == path) and (
            self.method is None or self.method == method
        )


@dataclass
class Position:
    amt: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    leverage: int = 20


@dataclass
class State:
    symbols: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    prices: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)  # by orderId
    algo_orders: dict[int, dict[str, Any]] = field(default_factory=dict)  # by algoId
    dual: bool = False
    fill: bool = True
    market_outcomes: list[tuple[str, Decimal | None]] = field(default_factory=list)
    immediate_trigger_code: int = -2021
    weights: list[tuple[float, int]] = field(default_factory=list)  # (time, weight)
    order_times: list[float] = field(default_factory=list)
    listen_keys: dict[str, float] = field(default_factory=dict)  # key -> expiry (monotonic)
    keep_alives: int = 0
    stream_fault: str | None = None
    stream_held: list[dict[str, Any]] = field(default_factory=list)
    stream_refused: bool = False
    last_event_ms: int = 0
    stream_log: list[dict[str, Any]] = field(default_factory=list)
    clock_offset_ms: int = 0
    delay_ms: int = 0
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    unknown_paths: list[str] = field(default_factory=list)
    next_id: int = 8_000_000


def _num(params: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise FakeError(
                -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
            )
        return None
    if not NUMBER_RE.match(raw):
        raise FakeError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    return Decimal(raw)


def _s(d: Decimal) -> str:
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


class FakeBinance:
    """The fake exchange. Thread-safe: handlers and test code share ``self.lock``."""

    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.lock = threading.RLock()
        self.state = State()
        self.reset()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        #: tests: called (in the fake's thread) on each listen-key keep-alive
        self.on_keep_alive: Callable[[], object] | None = None
        #: listen key -> the queues of its live websocket connections
        self._sockets: dict[str, list[asyncio.Queue[dict[str, Any] | None]]] = {}

    # -- administration (tests; also reachable as POST /_admin/<name>) --------------------
    def reset(self) -> None:
        with self.lock:
            for key in list(getattr(self, "_sockets", {})):
                self._push_to(key, [None])
            self.state = State()
            for sym, spec in DEFAULT_SYMBOLS.items():
                self.add_symbol(sym, **spec)

    def add_symbol(
        self,
        symbol: str,
        step_size: str = "0.001",
        min_qty: str = "0.001",
        max_qty: str = "1000",
        market_max_qty: str | None = None,
        min_notional: str = "5",
        tick_size: str = "0.01",
        price: str = "100",
        market_step_size: str | None = None,
        status: str = "TRADING",
    ) -> None:
        with self.lock:
            self.state.symbols[symbol] = {
                "step_size": Decimal(step_size),
                "min_qty": Decimal(min_qty),
                "max_qty": Decimal(max_qty),
                "market_max_qty": Decimal(market_max_qty or max_qty),
                "market_step_size": Decimal(market_step_size or step_size),
                "min_notional": Decimal(min_notional),
                "tick_size": Decimal(tick_size),
                "trading": Decimal(1 if status == "TRADING" else 0),
            }
            self.state.prices.setdefault(symbol, Decimal(price))

    def add_symbols(self, count: int, prefix: str = "SYM") -> list[str]:
        names = [f"{prefix}{i:04d}USDT" for i in range(count)]
        for n in names:
            self.add_symbol(n)
        return names

    def set_price(self, symbol: str, price: str) -> None:
        """A new mark; conditional orders it crosses trigger (see ``_trigger_algos``)."""
        with self.lock:
            self.state.prices[symbol] = Decimal(price)
            self._trigger_algos(symbol)

    def set_market_outcome(self, outcome: str, filled: str | None = None, count: int = 1) -> None:
        """The next ``count`` market orders end ``EXPIRED`` (nothing filled),
        ``EXPIRED_IN_MATCH`` (nothing filled) or ``PARTIAL`` (``filled`` of it filled, the
        rest expired: status EXPIRED)."""
        if outcome not in ("EXPIRED", "EXPIRED_IN_MATCH", "PARTIAL"):
            raise ValueError(f"unknown market outcome {outcome}")
        with self.lock:
            qty = Decimal(filled) if filled is not None else None
            self.state.market_outcomes.extend([(outcome, qty)] * count)

    def set_immediate_trigger_code(self, code: int) -> None:
        """The code a stop that would trigger at once is refused with (-2021 or -4142)."""
        with self.lock:
            self.state.immediate_trigger_code = code

    def set_algo_state(
        self, client_algo_id: str, status: str, actual_qty: str = "", actual_price: str = ""
    ) -> None:
        """Force a conditional order's status (e.g. TRIGGERING stuck, FINISHED unfilled)."""
        with self.lock:
            algo = self._algo_by_client_id(client_algo_id)
            if algo is None:
                raise KeyError(client_algo_id)
            algo.update(
                algoStatus=status,
                actualQty=actual_qty,
                actualPrice=actual_price,
                updateTime=self._now_ms(),
            )

    def set_position(
        self,
        symbol: str,
        amt: str,
        entry_price: str | None = None,
        position_side: str = "BOTH",
        leverage: int = 20,
    ) -> None:
        with self.lock:
            entry = Decimal(entry_price) if entry_price else self.state.prices[symbol]
            self.state.positions[(symbol, position_side)] = Position(Decimal(amt), entry, leverage)
            self._emit([self._account_event(symbol, position_side)])

    def set_dual(self, enabled: bool) -> None:
        with self.lock:
            self.state.dual = enabled

    def set_fill(self, enabled: bool) -> None:
        """``False``: market orders are accepted and stay NEW (never filled)."""
        with self.lock:
            self.state.fill = enabled

    def set_clock_offset(self, offset_ms: int) -> None:
        with self.lock:
            self.state.clock_offset_ms = offset_ms

    def set_delay(self, delay_ms: int) -> None:
        with self.lock:
            self.state.delay_ms = delay_ms

    def fail_next(self, count: int = 1, **kw: Any) -> None:
        with self.lock:
            self.state.faults.append(Fault(count=count, **kw))

    def clear_faults(self) -> None:
        with self.lock:
            self.state.faults.clear()
            self.state.delay_ms = 0

    def position(self, symbol: str, position_side: str = "BOTH") -> str:
        with self.lock:
            return _s(self.state.positions.get((symbol, position_side), Position()).amt)

    def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(o)
                for o in self.state.orders.values()
                if symbol is None or o["symbol"] == symbol
            ]

    def algo_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(o)
                for o in self.state.algo_orders.values()
                if symbol is None or o["symbol"] == symbol
            ]

    def request_count(self, path: str, method: str | None = None) -> int:
        with self.lock:
            return sum(
                1 for m, p in self.state.requests if p == path and (method is None or m == method)
            )

    def requests(self) -> list[list[str]]:
        with self.lock:
            return [[m, p] for m, p in self.state.requests]

    def unknown_paths(self) -> list[str]:
        with self.lock:
            return list(self.state.unknown_paths)

    ADMIN = frozenset(
        {
            "reset",
            "add_symbol",
            "add_symbols",
            "set_price",
            "set_position",
            "set_dual",
            "set_fill",
            "set_market_outcome",
            "set_immediate_trigger_code",
            "set_algo_state",
            "set_clock_offset",
            "set_delay",
            "fail_next",
            "clear_faults",
            "position",
            "orders",
            "algo_orders",
            "request_count",
            "requests",
            "unknown_paths",
            "expire_listen_key",
            "set_stream_fault",
            "disconnect_streams",
            "stream_events",
            "stream_connections",
            "set_stream_refused",
        }
    )

    # -- user data stream (listen key, websocket) -----------------------------------------
    def expire_listen_key(self) -> None:
        """Binance's expiry: ``listenKeyExpired`` to every socket of the key, which is then
        closed; the key is gone (keep-alive answers -1125, a new POST makes a new key)."""
        with self.lock:
            for key in list(self.state.listen_keys):
                self._push_to(
                    key, [{"e": "listenKeyExpired", "E": self._now_ms(), "listenKey": key}, None]
                )
                del self.state.listen_keys[key]

    def set_stream_fault(self, fault: str) -> None:
        """The next batch of user-stream events: ``drop_mid_fill`` (the first event, then
        the connection closes: the rest is lost), ``duplicate`` (each event twice) or
        ``reorder`` (the batch is held back and sent after the next one)."""
        if fault not in ("drop_mid_fill", "duplicate", "reorder"):
            raise ValueError(f"unknown stream fault {fault}")
        with self.lock:
            self.state.stream_fault = fault

    def disconnect_streams(self) -> None:
        """Close every user-stream connection (the key stays valid)."""
        with self.lock:
            for key in list(self._sockets):
                self._push_to(key, [None])

    def stream_events(self) -> list[dict[str, Any]]:
        """Every user-stream event emitted so far, in order (before faults are applied)."""
        with self.lock:
            return [dict(e) for e in self.state.stream_log]

    def stream_connections(self) -> int:
        with self.lock:
            return sum(len(qs) for qs in self._sockets.values())

    def _push_to(self, key: str, events: list[dict[str, Any] | None]) -> None:
        loop = self._serving_loop
        for q in self._sockets.get(key, []):
            for ev in events:
                if loop is not None:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(q.put_nowait, ev)

    def _emit(self, events: list[dict[str, Any]]) -> None:
        """Events of one change, in Binance's order, to every live socket (a fault applied
        once). Called with ``self.lock`` held."""
        self.state.stream_log.extend(events)
        fault, self.state.stream_fault = self.state.stream_fault, None
        out: list[dict[str, Any] | None] = list(events)
        if fault == "duplicate":
            out = [e for ev in events for e in (ev, ev)]
        elif fault == "reorder":
            self.state.stream_held = list(events)
            return
        elif fault == "drop_mid_fill":
            out = [*events[:1], None]
        if self.state.stream_held:
            out += self.state.stream_held
            self.state.stream_held = []
        for key in list(self._sockets):
            if key in self.state.listen_keys:
                self._push_to(key, out)

    def _event_ms(self) -> int:
        """Event time, strictly increasing (events of one millisecond stay ordered)."""
        self.state.last_event_ms = max(self._now_ms(), self.state.last_event_ms + 1)
        return self.state.last_event_ms

    def set_stream_refused(self, refused: bool) -> None:
        """``True``: listen keys cannot be created and sockets are refused (and the open
        ones closed): the user stream is down until ``False``."""
        with self.lock:
            self.state.stream_refused = refused
            if refused:
                for key in list(self._sockets):
                    self._push_to(key, [None])

    def _order_event(
        self, o: dict[str, Any], exec_type: str, last_qty: str = "0", last_price: str = "0"
    ) -> dict[str, Any]:
        now = self._event_ms()
        return {
            "e": "ORDER_TRADE_UPDATE",
            "E": now,
            "T": now,
            "o": {
                "s": o["symbol"],
                "c": o["clientOrderId"],
                "S": o["side"],
                "o": o["type"],
                "f": o["timeInForce"],
                "q": o["origQty"],
                "p": o["price"],
                "ap": o["avgPrice"],
                "sp": o["stopPrice"],
                "x": exec_type,
                "X": o["status"],
                "i": o["orderId"],
                "l": last_qty,
                "z": o["executedQty"],
                "L": last_price,
                "n": "0",
                "N": "USDT",
                "T": now,
                "t": now if exec_type == "TRADE" else 0,
                "b": "0",
                "a": "0",
                "m": False,
                "R": o["reduceOnly"],
                "wt": o["workingType"],
                "ot": o["origType"],
                "ps": o["positionSide"],
                "cp": False,
                "rp": "0",
                "pP": False,
                "si": 0,
                "ss": 0,
                "V": o["selfTradePreventionMode"],
                "pm": "NONE",
                "gtd": 0,
            },
        }

    def _account_event(self, sym: str, ps: str, reason: str = "ORDER") -> dict[str, Any]:
        pos = self.state.positions.get((sym, ps), Position())
        mark = self.state.prices.get(sym, Decimal(0))
        now = self._event_ms()
        return {
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": now,
            "a": {
                "m": reason,
                "B": [{"a": "USDT", "wb": "10000", "cw": "10000", "bc": "0"}],
                "P": [
                    {
                        "s": sym,
                        "pa": _s(pos.amt),
                        "ep": _s(pos.entry),
                        "bep": _s(pos.entry),
                        "cr": "0",
                        "up": _s((mark - pos.entry) * pos.amt),
                        "mt": "cross",
                        "iw": "0",
                        "ps": ps,
                        "ma": "USDT",
                    }
                ],
            },
        }

    def _algo_event(self, a: dict[str, Any]) -> dict[str, Any]:
        now = self._event_ms()
        return {
            "e": "ALGO_UPDATE",
            "T": now,
            "E": now,
            "o": {
                "caid": a["clientAlgoId"],
                "aid": a["algoId"],
                "at": "CONDITIONAL",
                "o": a["orderType"],
                "s": a["symbol"],
                "S": a["side"],
                "ps": a["positionSide"],
                "f": a["timeInForce"],
                "q": a["quantity"],
                "X": a["algoStatus"],
                "ai": a["actualOrderId"],
                "ap": a["actualPrice"] or "0",
                "aq": a["actualQty"] or "0",
                "act": "0",
                "tp": a["triggerPrice"],
                "p": "0",
                "V": "EXPIRE_MAKER",
                "wt": a["workingType"],
                "pm": "NONE",
                "cp": False,
                "pP": a["priceProtect"],
                "R": a["reduceOnly"],
                "tt": a["triggerTime"],
                "gtd": 0,
                "rm": "",
            },
        }

    def _market_events(self, o: dict[str, Any]) -> list[dict[str, Any]]:
        """A market order's events as Binance sends them: NEW, then (when something
        filled) the position's ACCOUNT_UPDATE, then the TRADE (or the EXPIRED)."""
        new = dict(o, status="NEW", executedQty="0", avgPrice="0")
        events = [self._order_event(new, "NEW")]
        if Decimal(o["executedQty"]) > 0:
            events.append(self._account_event(o["symbol"], o["positionSide"]))
            events.append(self._order_event(o, "TRADE", o["executedQty"], o["avgPrice"]))
        if o["status"] in ("EXPIRED", "EXPIRED_IN_MATCH"):
            events.append(self._order_event(o, "EXPIRED"))
        return events

    def _listen_key(self, request: web.Request, method: str) -> web.Response:
        """``/fapi/v1/listenKey`` (API key only, no signature): POST creates (or returns the
        live key, extended), PUT keeps it alive (-1125 when it is gone), DELETE closes it."""
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            return web.json_response(
                {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
                status=401,
            )
        with self.lock:
            if self.state.stream_refused:
                return web.json_response({"msg": "Service Unavailable."}, status=503)
            live = next(iter(self.state.listen_keys), None)
            if method == "POST":
                key = live or secrets.token_hex(32)
                self.state.listen_keys[key] = time.monotonic() + 3600
                return web.json_response({"listenKey": key})
            if live is None:
                return web.json_response(
                    {"code": -1125, "msg": "This listenKey does not exist."}, status=400
                )
            if method == "PUT":
                self.state.listen_keys[live] = time.monotonic() + 3600
                self.state.keep_alives += 1
                if self.on_keep_alive is not None:
                    self.on_keep_alive()
                return web.json_response({"listenKey": live})
            del self.state.listen_keys[live]
            self._push_to(live, [None])
            return web.json_response({})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """The user data stream: ``/private/ws?listenKey=…`` (ccxt's linear URL) or
        ``/ws/<listenKey>``."""
        key = request.query.get("listenKey") or request.match_info.get("key", "")
        with self.lock:
            if key not in self.state.listen_keys or self.state.stream_refused:
                return web.json_response(
                    {"code": -1125, "msg": "This listenKey does not exist."}, status=400
                )
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            self._sockets.setdefault(key, []).append(queue)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)

        async def reader() -> None:
            async for _msg in ws:  # pings are answered inside; nothing is expected
                pass
            queue.put_nowait(None)

        read = asyncio.ensure_future(reader())
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    break
                await ws.send_str(json.dumps(ev))
        except (ConnectionError, RuntimeError):
            pass
        finally:
            read.cancel()
            with self.lock:
                qs = self._sockets.get(key, [])
                if queue in qs:
                    qs.remove(queue)
                if not qs:
                    self._sockets.pop(key, None)
            await ws.close()
        return ws

    # -- serving ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/private/ws", self._stream)
        app.router.add_get("/ws/{key}", self._stream)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._serving_loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sock_port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock_port}"
        return self.url

    async def shutdown(self) -> None:
        self.disconnect_streams()
        await asyncio.sleep(0)
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> str:
        """Serve from a background thread; returns the base URL."""
        ready = threading.Event()
        failed: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve())
            except BaseException as e:
                failed.append(e)
                loop.close()
                raise
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(self.shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fakebinance", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failed:
            raise RuntimeError(f"fakebinance did not start: {failed}")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    # -- request handling ------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(time.time() * 1000) + self.state.clock_offset_ms

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for f in self.state.faults:
            if f.count > 0 and f.matches(method, path):
                f.count -= 1
                return f
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        body = await request.text()
        if path.startswith("/_admin/"):
            return self._admin(path.removeprefix("/_admin/"), body)
        if path == "/fapi/v1/listenKey":
            with self.lock:
                self.state.requests.append((method, path))
            return self._listen_key(request, method)
        with self.lock:
            self.state.requests.append((method, path))
            fault = self._take_fault(method, path)
            delay = self.state.delay_ms
            headers = self._rate_headers(method, path)
        if delay:
            await asyncio.sleep(delay / 1000)
        if fault is not None and fault.mode == "unavailable503":
            return web.json_response({"msg": "Service Unavailable."}, status=503, headers=headers)
        if fault is not None and not fault.accept and fault.mode == "error":
            return self._fault_response(fault)
        try:
            with self.lock:
                result = self._handle(request, method, path, body)
        except FakeError as e:
            return web.json_response(
                {"code": e.code, "msg": e.msg}, status=e.status, headers=headers
            )
        if fault is not None and fault.mode == "unknown503":
            return web.json_response(
                {
                    "code": -1000,
                    "msg": "Unknown error, please check your request or try again later.",
                },
                status=503,
                headers=headers,
            )
        if fault is not None:
            if fault.mode == "hang":
                assert self._stopping is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), HANG_S)
            elif fault.mode == "garbage":
                return web.json_response({"unexpected": "answer"})
            elif fault.mode == "drop":
                assert request.transport is not None
                request.transport.close()
            return self._fault_response(fault)
        return web.json_response(result, headers=headers)

    def _rate_headers(self, method: str, path: str) -> dict[str, str]:
        """Binance's usage headers: the weight used in the last minute by every request, and
        on order endpoints the orders placed in the last 10 s and minute."""
        now = time.monotonic()
        st = self.state
        st.weights = [(t, w) for t, w in st.weights if now - t < 60]
        st.weights.append((now, WEIGHTS.get(path, 1)))
        headers = {"X-MBX-USED-WEIGHT-1M": str(sum(w for _, w in st.weights))}
        if method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
            st.order_times = [t for t in st.order_times if now - t < 60]
            st.order_times.append(now)
            headers["X-MBX-ORDER-COUNT-1M"] = str(len(st.order_times))
            headers["X-MBX-ORDER-COUNT-10S"] = str(sum(1 for t in st.order_times if now - t < 10))
        return headers

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s else {}
        if fault.code is None:
            return web.Response(
                status=fault.status,
                text=f"<html>{fault.msg}</html>",
                content_type="text/html",
                headers=headers,
            )
        return web.json_response(
            {"code": fault.code, "msg": fault.msg}, status=fault.status, headers=headers
        )

    def _admin(self, name: str, body: str) -> web.Response:
        if name not in self.ADMIN:
            return web.json_response({"error": f"unknown admin call {name}"}, status=404)
        kwargs = json.loads(body) if body else {}
        return web.json_response({"result": getattr(self, name)(**kwargs)})

    def _signed(self, request: web.Request, body: str) -> dict[str, str]:
        """Check key, signature and timestamp exactly like Binance; return the parameters."""
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise FakeError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        qs = request.query_string
        payload, sig = "", ""
        for part in (qs, body):
            if not part:
                continue
            head, sep, tail = part.rpartition("signature=")
            if sep and not sig:
                payload += head.removesuffix("&")
                sig = tail
            else:
                payload += part
        want = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, want):
            raise FakeError(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(qs, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        ts, window = int(params.get("timestamp", "0")), int(params.get("recvWindow", "5000"))
        now = self._now_ms()
        if ts < now - window or ts > now + 1000:
            raise FakeError(-1021, "Timestamp for this request is outside of the recvWindow.")
        return params

    def _handle(self, request: web.Request, method: str, path: str, body: str) -> Any:
        public = {
            ("GET", "/fapi/v1/ping"): lambda p: {},
            ("GET", "/fapi/v1/time"): lambda p: {"serverTime": self._now_ms()},
            ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/premiumIndex"): self._premium_index,
        }
        private = {
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v3/account"): self._account,
            ("GET", "/fapi/v2/account"): self._account,
            ("GET", "/fapi/v1/leverageBracket"): self._leverage_bracket,
            ("GET", "/fapi/v1/positionSide/dual"): lambda p: {"dualSidePosition": self.state.dual},
            ("POST", "/fapi/v1/order"): self._new_order,
            ("GET", "/fapi/v1/order"): self._get_order,
            ("DELETE", "/fapi/v1/order"): self._cancel_order,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("POST", "/fapi/v1/algoOrder"): self._new_algo,
            ("GET", "/fapi/v1/algoOrder"): self._get_algo,
            ("DELETE", "/fapi/v1/algoOrder"): self._cancel_algo,
            ("GET", "/fapi/v1/openAlgoOrders"): self._open_algos,
        }
        if (method, path) in public:
            return public[(method, path)](dict(request.query))
        if (method, path) in private:
            return private[(method, path)](self._signed(request, body))
        self.state.unknown_paths.append(f"{method} {path}")
        print(f"fakebinance: unknown path {method} {path}", file=sys.stderr, flush=True)
        raise FakeError(-5000, f"fakebinance: unknown path {method} {path}", 404)

    # -- market data -----------------------------------------------------------------------
    def _symbol(self, params: dict[str, str]) -> tuple[str, dict[str, Decimal]]:
        sym = params.get("symbol", "")
        spec = self.state.symbols.get(sym)
        if spec is None:
            raise FakeError(-1121, "Invalid symbol.")
        return sym, spec

    def _exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        out = []
        for sym, f in self.state.symbols.items():
            out.append(
                {
                    "symbol": sym,
                    "pair": sym,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING" if f["trading"] else "SETTLING",
                    "baseAsset": sym.removesuffix("USDT"),
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _s(f["tick_size"]),
                            "maxPrice": "4529764",
                            "tickSize": _s(f["tick_size"]),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": _s(f["step_size"]),
                            "minQty": _s(f["min_qty"]),
                            "maxQty": _s(f["max_qty"]),
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "stepSize": _s(f["market_step_size"]),
                            "minQty": _s(f["min_qty"]),
                            "maxQty": _s(f["market_max_qty"]),
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": _s(f["min_notional"])},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                    "permissionSets": ["GRID", "COPY"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}],
            "symbols": out,
        }

    def _mark(self, sym: str) -> dict[str, Any]:
        p = _s(self.state.prices[sym])
        return {
            "symbol": sym,
            "markPrice": p,
            "indexPrice": p,
            "estimatedSettlePrice": p,
            "lastFundingRate": "0.00010000",
            "interestRate": "0.00010000",
            "nextFundingTime": self._now_ms() + 3_600_000,
            "time": self._now_ms(),
        }

    def _premium_index(self, params: dict[str, str]) -> Any:
        if "symbol" in params:
            return self._mark(self._symbol(params)[0])
        return [self._mark(s) for s in self.state.symbols]

    # -- account ---------------------------------------------------------------------------
    def _position_rows(self, symbol: str | None) -> list[dict[str, Any]]:
        rows = []
        for (sym, side), pos in sorted(self.state.positions.items()):
            if pos.amt == 0 or (symbol is not None and sym != symbol):
                continue
            mark = self.state.prices[sym]
            notional = pos.amt * mark
            margin = abs(notional) / pos.leverage
            rows.append(
                {
                    "symbol": sym,
                    "positionSide": side,
                    "positionAmt": _s(pos.amt),
                    "entryPrice": _s(pos.entry),
                    "breakEvenPrice": _s(pos.entry),
                    "markPrice": _s(mark),
                    "unRealizedProfit": _s((mark - pos.entry) * pos.amt),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": _s(notional),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": _s(margin),
                    "maintMargin": _s(margin / 10),
                    "positionInitialMargin": _s(margin),
                    "openOrderInitialMargin": "0",
                    "adl": 1,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": self._now_ms(),
                }
            )
        return rows

    def _position_risk(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return self._position_rows(params.get("symbol"))

    def _account(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "totalWalletBalance": "10000",
            "availableBalance": "10000",
            "assets": [{"asset": "USDT", "walletBalance": "10000", "availableBalance": "10000"}],
            "positions": self._position_rows(None),
        }

    def _leverage_bracket(self, params: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "symbol": s,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": 125,
                        "notionalCap": 50000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.004,
                        "cum": 0.0,
                    }
                ],
            }
            for s in self.state.symbols
        ]

    # -- orders ----------------------------------------------------------------------------
    @staticmethod
    def _decimals(d: Decimal) -> int:
        exp = d.normalize().as_tuple().exponent
        return max(0, -exp) if isinstance(exp, int) else 0

    def _check_qty(self, qty: Decimal, step: Decimal, lo: Decimal, hi: Decimal) -> None:
        if qty <= 0:
            raise FakeError(-4003, "Quantity less than zero.")
        if self._decimals(qty) > self._decimals(step):
            raise FakeError(-1111, "Precision is over the maximum defined for this asset.")
        if qty % step != 0:
            raise FakeError(-4023, "Qty not increased by step size.")
        if qty < lo:
            raise FakeError(-4004, "Quantity less than min quantity.")
        if qty > hi:
            raise FakeError(-4005, "Quantity greater than max quantity.")

    def _check_price(self, price: Decimal, tick: Decimal) -> None:
        if self._decimals(price) > self._decimals(tick):
            raise FakeError(-1111, "Precision is over the maximum defined for this asset.")
        if price % tick != 0:
            raise FakeError(-4014, "Price not increased by tick size.")

    @staticmethod
    def _check_params(params: dict[str, str], allowed: set[str], id_field: str) -> None:
        """Unknown parameters, enum values and the client id, as Binance checks them."""
        unread = set(params) - allowed
        if unread:
            raise FakeError(
                -1104,
                f"Not all sent parameters were read; read '{len(params) - len(unread)}' "
                f"parameter(s) but was sent '{len(params)}'.",
            )
        for name, (legal, code, msg) in ENUMS.items():
            if name in params and params[name] not in legal:
                raise FakeError(code, msg)
        coid = params.get(id_field)
        if coid is not None and not CLIENT_ID_RE.match(coid):
            msg = (
                "Client order id length should not be more than 36 chars"
                if len(coid) > 36
                else "Client order id is not valid."
            )
            raise FakeError(-4015, msg)

    def _position_side(self, params: dict[str, str]) -> str:
        ps = params.get("positionSide", "BOTH")
        if self.state.dual != (ps in ("LONG", "SHORT")):
            raise FakeError(-4061, "Order's position side does not match user's setting.")
        if self.state.dual and "reduceOnly" in params:
            raise FakeError(-1106, "Parameter 'reduceOnly' sent when not required.")
        return ps

    def _reducing(self, params: dict[str, str], ps: str, side: str) -> bool:
        """Does this order only reduce? (hedge mode: SELL on LONG or BUY on SHORT)."""
        if ps == "BOTH":
            return params.get("reduceOnly") == "true"
        return (ps, side) in (("LONG", "SELL"), ("SHORT", "BUY"))

    def _resting_reduce_only(self, sym: str, ps: str, side: str) -> Decimal:
        """Open quantity of the reduce-only plain orders resting on this side."""
        return sum(
            (
                Decimal(o["origQty"]) - Decimal(o["executedQty"])
                for o in self.state.orders.values()
                if o["symbol"] == sym
                and o["positionSide"] == ps
                and o["side"] == side
                and o["status"] in OPEN
                and (o["reduceOnly"] or ps != "BOTH")
            ),
            Decimal(0),
        )

    def _check_reduce(self, sym: str, ps: str, side: str, qty: Decimal | None) -> None:
        amt = self.state.positions.get((sym, ps), Position()).amt
        reduces = (side == "SELL" and amt > 0) or (side == "BUY" and amt < 0)
        if not reduces or (qty is not None and qty > abs(amt)):
            raise FakeError(-2022, "ReduceOnly Order is rejected.")
        if qty is not None and qty + self._resting_reduce_only(sym, ps, side) > abs(amt):
            raise FakeError(
                -4118,
                "ReduceOnly Order Failed. Please check your existing position and open orders",
            )

    def _open_order_by_client_id(self, sym: str, coid: str) -> dict[str, Any] | None:
        for o in self.state.orders.values():
            if o["symbol"] == sym and o["clientOrderId"] == coid and o["status"] in OPEN:
                return o
        return None

    def _algo_by_client_id(self, coid: str) -> dict[str, Any] | None:
        """The newest conditional order with this client id."""
        found = None
        for o in self.state.algo_orders.values():
            if o["clientAlgoId"] == coid:
                found = o
        return found

    def _new_order(self, params: dict[str, str]) -> dict[str, Any]:
        self._check_params(params, ORDER_PARAMS, "newClientOrderId")
        sym, spec = self._symbol(params)
        otype, side = params.get("type", ""), params.get("side", "")
        if otype in (
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ):
            raise FakeError(
                -4120,
                "Order type not supported for this endpoint. Please use the "
                "Algo Order API endpoints instead.",
            )
        if otype != "MARKET":
            raise FakeError(-1116, "Invalid orderType.")
        if side not in ("BUY", "SELL"):
            raise FakeError(
                -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed."
            )
        ps = self._position_side(params)
        qty = _num(params, "quantity")
        assert qty is not None
        self._check_qty(qty, spec["market_step_size"], spec["min_qty"], spec["market_max_qty"])
        coid = params.get("newClientOrderId") or f"fake-{self.state.next_id}"
        if self._open_order_by_client_id(sym, coid) is not None:
            raise FakeError(-4116, "ClientOrderId is duplicated.")
        reduce_only = self._reducing(params, ps, side)
        price = self.state.prices[sym]
        if reduce_only:
            self._check_reduce(sym, ps, side, qty)
        elif qty * price < spec["min_notional"]:
            raise FakeError(
                -4164,
                f"Order's notional must be no smaller than "
                f"{_s(spec['min_notional'])} (unless you choose reduce only).",
            )
        order = self._record_market(sym, ps, side, qty, coid, params.get("reduceOnly") == "true")
        outcome = self.state.market_outcomes.pop(0) if self.state.market_outcomes else None
        if outcome is not None:
            kind, part = outcome
            if kind == "PARTIAL":
                filled = part if part is not None else qty / 2
                self._fill(order, sym, ps, side, min(filled, qty), price)
            order.update(
                status="EXPIRED_IN_MATCH" if kind == "EXPIRED_IN_MATCH" else "EXPIRED",
                updateTime=self._now_ms(),
            )
        elif self.state.fill:
            self._fill(order, sym, ps, side, qty, price)
        self._emit(self._market_events(order))
        return dict(order)

    def _record_market(
        self, sym: str, ps: str, side: str, qty: Decimal, coid: str, reduce_only: bool
    ) -> dict[str, Any]:
        self.state.next_id += 1
        order = {
            "orderId": self.state.next_id,
            "symbol": sym,
            "status": "NEW",
            "clientOrderId": coid,
            "price": "0",
            "avgPrice": "0",
            "origQty": _s(qty),
            "executedQty": "0",
            "cumQty": "0",
            "cumQuote": "0",
            "timeInForce": "GTC",
            "type": "MARKET",
            "reduceOnly": reduce_only,
            "closePosition": False,
            "side": side,
            "positionSide": ps,
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": "MARKET",
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": self._now_ms(),
            "updateTime": self._now_ms(),
        }
        self.state.orders[order["orderId"]] = order
        return order

    def _fill(
        self, order: dict[str, Any], sym: str, ps: str, side: str, qty: Decimal, price: Decimal
    ) -> None:
        pos = self.state.positions.setdefault((sym, ps), Position())
        signed = qty if side == "BUY" else -qty
        new_amt = pos.amt + signed
        if pos.amt == 0 or (pos.amt > 0) == (signed > 0):
            pos.entry = (pos.entry * abs(pos.amt) + price * qty) / abs(new_amt)
        elif new_amt == 0 or (new_amt > 0) != (pos.amt > 0):
            pos.entry = price if new_amt != 0 else Decimal(0)
        pos.amt = new_amt
        done = Decimal(order["executedQty"]) + qty
        order.update(
            status="FILLED" if done >= Decimal(order["origQty"]) else "PARTIALLY_FILLED",
            avgPrice=_s(price),
            executedQty=_s(done),
            cumQty=_s(done),
            cumQuote=_s(done * price),
            updateTime=self._now_ms(),
        )

    def _find_order(self, params: dict[str, str]) -> dict[str, Any]:
        """By orderId, or by client id: the open order with it, else the newest one."""
        sym, _ = self._symbol(params)
        coid, oid = params.get("origClientOrderId"), params.get("orderId")
        found = None
        for o in self.state.orders.values():
            if o["symbol"] != sym:
                continue
            if str(o["orderId"]) == oid:
                return o
            if coid is not None and o["clientOrderId"] == coid:
                if o["status"] in OPEN:
                    return o
                found = o
        if found is None:
            raise FakeError(-2013, "Order does not exist.")
        return found

    def _get_order(self, params: dict[str, str]) -> dict[str, Any]:
        return dict(self._find_order(params))

    def _cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        try:
            o = self._find_order(params)
        except FakeError:
            raise FakeError(-2011, "Unknown order sent.") from None
        if o["status"] not in OPEN:
            raise FakeError(-2011, "Unknown order sent.")
        o["status"] = "CANCELED"
        return dict(o)

    def _open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = params.get("symbol")
        return [
            dict(o)
            for o in self.state.orders.values()
            if o["status"] in OPEN and sym in (None, o["symbol"])
        ]

    # -- algo (conditional) orders ---------------------------------------------------------
    def _new_algo(self, params: dict[str, str]) -> dict[str, Any]:
        self._check_params(params, ALGO_PARAMS, "clientAlgoId")
        sym, spec = self._symbol(params)
        if params.get("algoType") != "CONDITIONAL":
            raise FakeError(-1116, "Invalid algoType.")
        otype, side = params.get("type", ""), params.get("side", "")
        if otype != "STOP_MARKET":
            raise FakeError(-1116, "Invalid orderType.")
        if side not in ("BUY", "SELL"):
            raise FakeError(
                -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed."
            )
        ps = self._position_side(params)
        qty = _num(params, "quantity")
        trigger = _num(params, "triggerPrice")
        assert qty is not None and trigger is not None
        self._check_qty(qty, spec["step_size"], spec["min_qty"], spec["max_qty"])
        self._check_price(trigger, spec["tick_size"])
        mark = self.state.prices[sym]
        if (side == "SELL" and trigger >= mark) or (side == "BUY" and trigger <= mark):
            code = self.state.immediate_trigger_code
            raise FakeError(
                code,
                "Order would immediately trigger."
                if code == -2021
                else "REJECT: take profit or stop order will be triggered immediately",
            )
        coid = params.get("clientAlgoId") or f"fake-algo-{self.state.next_id}"
        held = self._algo_by_client_id(coid)
        if held is not None and held["algoStatus"] in ALGO_OPEN:
            raise FakeError(-4116, "ClientOrderId is duplicated.")
        if self._reducing(params, ps, side):
            self._check_reduce(sym, ps, side, None)
        self.state.next_id += 1
        algo = {
            "algoId": self.state.next_id,
            "clientAlgoId": coid,
            "algoType": "CONDITIONAL",
            "orderType": otype,
            "symbol": sym,
            "side": side,
            "positionSide": ps,
            "timeInForce": params.get("timeInForce", "GTC"),
            "quantity": _s(qty),
            "algoStatus": "NEW",
            "actualOrderId": "",
            "actualQty": "",
            "actualPrice": "",
            "triggerPrice": _s(trigger),
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": params.get("workingType", "CONTRACT_PRICE"),
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": params.get("priceProtect", "").upper() == "TRUE",
            "reduceOnly": params.get("reduceOnly") == "true",
            "createTime": self._now_ms(),
            "updateTime": self._now_ms(),
            "triggerTime": 0,
            "goodTillDate": 0,
        }
        self.state.algo_orders[algo["algoId"]] = algo
        self._emit([self._algo_event(algo)])
        return dict(algo)

    def _trigger_algos(self, sym: str) -> None:
        """Conditional orders the mark crossed: TRIGGERING, then a market order in the
        matching engine (TRIGGERED), filled at the mark for what is left to reduce
        (FINISHED, with actualOrderId/actualQty/actualPrice). Nothing left to reduce:
        EXPIRED (docs/exchanges.md §6)."""
        mark = self.state.prices[sym]
        for algo in list(self.state.algo_orders.values()):
            if algo["symbol"] != sym or algo["algoStatus"] != "NEW":
                continue
            trigger, side = Decimal(algo["triggerPrice"]), algo["side"]
            if not ((side == "SELL" and mark <= trigger) or (side == "BUY" and mark >= trigger)):
                continue
            ps = algo["positionSide"]
            algo.update(algoStatus="TRIGGERING", triggerTime=self._now_ms())
            amt = self.state.positions.get((sym, ps), Position()).amt
            reduces = (side == "SELL" and amt > 0) or (side == "BUY" and amt < 0)
            qty = min(Decimal(algo["quantity"]), abs(amt)) if reduces else Decimal(0)
            if qty <= 0:
                algo.update(algoStatus="EXPIRED", updateTime=self._now_ms())
                self._emit([self._algo_event(algo)])
                continue
            order = self._record_market(
                sym, ps, side, qty, f"autoalgo-{algo['algoId']}", bool(algo["reduceOnly"])
            )
            algo.update(algoStatus="TRIGGERED", actualOrderId=str(order["orderId"]))
            self._fill(order, sym, ps, side, qty, mark)
            algo.update(
                algoStatus="FINISHED",
                actualQty=order["executedQty"],
                actualPrice=order["avgPrice"],
                updateTime=self._now_ms(),
            )
            self._emit(
                [
                    self._algo_event(dict(algo, algoStatus="TRIGGERED")),
                    *self._market_events(order),
                    self._algo_event(algo),
                ]
            )

    def _find_algo(self, params: dict[str, str]) -> dict[str, Any]:
        coid, aid = params.get("clientAlgoId"), params.get("algoId")
        if aid is not None and aid.isdigit() and int(aid) in self.state.algo_orders:
            return self.state.algo_orders[int(aid)]
        found = self._algo_by_client_id(coid) if coid is not None else None
        if found is None:
            raise FakeError(-2013, "Order does not exist.")
        return found

    def _get_algo(self, params: dict[str, str]) -> dict[str, Any]:
        return dict(self._find_algo(params))

    def _cancel_algo(self, params: dict[str, str]) -> dict[str, Any]:
        o = self._find_algo(params)
        if o["algoStatus"] == "TRIGGERING":
            raise FakeError(-4117, "stop order is triggering")
        if o["algoStatus"] != "NEW":
            raise FakeError(-2011, "Unknown order sent.")
        o.update(algoStatus="CANCELED", updateTime=self._now_ms())
        self._emit([self._algo_event(o)])
        return {
            "algoId": o["algoId"],
            "clientAlgoId": o["clientAlgoId"],
            "code": "200",
            "msg": "success",
        }

    def _open_algos(self, params: dict[str, str]) -> list[dict[str, Any]]:
        sym = params.get("symbol")
        return [
            dict(o)
            for o in self.state.algo_orders.values()
            if o["algoStatus"] in ALGO_OPEN and sym in (None, o["symbol"])
        ]


class AdminClient:
    """Control a fake running in another process: ``call(name, **kwargs)``."""

    def __init__(self, url: str) -> None:
        if not url.startswith("http://127.0.0.1:"):
            raise ValueError(f"fakebinance admin only on 127.0.0.1, got {url}")
        self.url = url

    def call(self, name: str, **kwargs: Any) -> Any:
        req = urllib.request.Request(  # noqa: S310 (http to 127.0.0.1 only, checked above)
            f"{self.url}/_admin/{name}",
            data=json.dumps(kwargs).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())["result"]


async def _main(port: int, api_key: str, api_secret: str) -> None:
    fake = FakeBinance(api_key, api_secret)
    url = await fake.serve(port=port)
    print(f"FAKEBINANCE_URL={url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="fake Binance USD-M REST server (127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--api-key", default=API_KEY)
    ap.add_argument("--api-secret", default=API_SECRET)
    a = ap.parse_args()
    asyncio.run(_main(a.port, a.api_key, a.api_secret))
