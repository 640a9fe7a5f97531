"""Binance USDⓈ-M's user data stream through ccxt.pro (``watch_positions``,
``watch_orders``), behind ``exchange.stream.UserStream``.

ccxt creates the listen key (``POST /fapi/v1/listenKey``), keeps it alive (``PUT`` every
20 minutes), connects to ``<ws base>/private/ws?listenKey=…`` and turns ``ACCOUNT_UPDATE``
and ``ORDER_TRADE_UPDATE`` into its caches. We read quantities and prices from each entry's
raw ``info`` (strings → ``Decimal``), never from ccxt's floats.

* ``base_url`` points the REST tables and the websocket tables at another host (tests: the
  fake on 127.0.0.1, ``ws://``), as ``BinanceExchange`` does.
* A wake-up can carry several events, and an event that arrives while nobody waits only
  updates ccxt's cache: every call returns from the cache, so nothing pushed is lost between
  two calls.
* When the connection drops or the listen key expires (``listenKeyExpired``, then the socket
  closes; a keep-alive answered -1125), the call raises ``ExchangeUnavailable``, ``alive()``
  is False, and the next call starts over with a **new** listen key.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import ccxt.pro as ccxt_pro

from permitchain.contract.errors import ExchangeUnavailable
from permitchain.exchange.base import OrderInfo, OrderStatus, PositionInfo
from permitchain.exchange.binance import ORDER_STATUS, _point_urls, algo_status

log = logging.getLogger("permitchain.exchange.binance")


def _quiet(task: asyncio.Future[Any]) -> None:
    """A background watch's outcome is seen by the next call; only retrieve it here."""
    if not task.cancelled():
        task.exception()


def _d(v: Any) -> Decimal:
    return Decimal(str(v)) if v not in (None, "") else Decimal(0)


def position_of(info: dict[str, Any]) -> tuple[str, str, PositionInfo]:
    """A raw position (REST ``positionRisk`` row or ``ACCOUNT_UPDATE`` entry) → (symbol,
    position side, position)."""
    sym = str(info.get("s") or info.get("symbol"))
    amt = _d(info.get("pa", info.get("positionAmt")))
    entry = _d(info.get("ep", info.get("entryPrice")))
    upnl = _d(info.get("up", info.get("unRealizedProfit")))
    mark = _d(info.get("markPrice"))
    side = str(info.get("ps") or info.get("positionSide") or "BOTH")
    return sym, side, PositionInfo(sym, amt, entry, mark, unrealized_pnl=upnl)


def order_of(info: dict[str, Any]) -> OrderInfo | None:
    """A raw ``ORDER_TRADE_UPDATE`` (``o``) or ``ALGO_UPDATE`` entry → an order."""
    if "caid" in info:  # a conditional (algo) order
        qty, filled = _d(info.get("q")), _d(info.get("aq"))
        avg = _d(info.get("ap"))
        return OrderInfo(
            symbol=str(info.get("s")),
            client_order_id=str(info["caid"]),
            order_id=str(info.get("aid")),
            side="SELL" if info.get("S") == "SELL" else "BUY",
            type=str(info.get("o", "")),
            status=algo_status(str(info.get("X", "")), qty, filled),
            requested_qty=qty,
            filled_qty=filled,
            avg_price=avg if avg > 0 else None,
            reduce_only=bool(info.get("R")),
            stop_price=_d(info.get("tp")) or None,
        )
    if "c" not in info:
        return None
    avg = _d(info.get("ap"))
    return OrderInfo(
        symbol=str(info.get("s")),
        client_order_id=str(info["c"]),
        order_id=str(info.get("i")),
        side="SELL" if info.get("S") == "SELL" else "BUY",
        type=str(info.get("o", "")),
        status=ORDER_STATUS.get(str(info.get("X", "")), OrderStatus.NEW),
        requested_qty=_d(info.get("q")),
        filled_qty=_d(info.get("z")),
        avg_price=avg if avg > 0 else None,
        reduce_only=bool(info.get("R")),
    )


class BinanceUserStream:
    name = "binance"

    def __init__(
        self, api_key: str, api_secret: str, *, demo: bool, base_url: str | None = None
    ) -> None:
        self.ws = ccxt_pro.binanceusdm({"apiKey": api_key, "secret": api_secret})
        if demo:
            self.ws.enable_demo_trading(True)
        if base_url is not None:
            base = base_url.rstrip("/")
            ws_base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
            for table in ("api", "demo", "test"):
                _point_urls(self.ws.urls[table], base)
                ws = self.ws.urls[table].get("ws")
                if isinstance(ws, dict):
                    ws["linear"] = ws_base + "/ws"
        self._broken = False
        self._connecting: asyncio.Future[Any] | None = None
        self._seen: dict[str, tuple[str, ...]] = {}  # per symbol: what positions() last gave
        self._seen_orders: dict[str, tuple[str, ...]] = {}  # per client id: orders() last gave
        #: per (symbol, position side): the newest event time applied, and that position
        #: (an older update arriving later — out of order — never moves a position back)
        self._stamps: dict[tuple[str, str], int] = {}
        self._latest: dict[tuple[str, str], PositionInfo] = {}

    def __repr__(self) -> str:  # never show the keys
        return "BinanceUserStream()"

    def alive(self) -> bool:
        """Connected, and no error since the last (re)connection."""
        if self._broken:
            return False
        for client in list(self.ws.clients.values()):
            url = str(getattr(client, "url", ""))
            if "listenKey=" in url:
                connected = client.connected
                return bool(
                    not client.closed() and connected.done() and connected.exception() is None
                )
        return False

    async def _watch(self, method: str) -> None:
        try:
            await getattr(self.ws, method)()
            self._broken = False
        except Exception as e:  # ccxt raises its own tree and asyncio errors alike
            self._broken = True
            await self._start_over()
            raise ExchangeUnavailable(f"binance stream: {type(e).__name__}: {e}") from e

    async def _start_over(self) -> None:
        """Drop the connection and the listen key: the next call authenticates anew."""
        for opt in ("linear", "future"):
            if isinstance(self.ws.options.get(opt), dict):
                self.ws.options[opt]["lastAuthenticatedTime"] = 0
                self.ws.options[opt]["listenKey"] = None
        for url, client in list(self.ws.clients.items()):
            if "listenKey=" in str(url):
                try:
                    await client.close()
                except Exception as e:  # already closed
                    log.debug("binance stream: close: %s", e)
                self.ws.clients.pop(url, None)
        positions = getattr(self.ws, "positions", None)
        if isinstance(positions, dict):
            positions.pop("linear", None)  # the next subscription loads a fresh snapshot
        self._stamps.clear()  # the fresh snapshot replaces what the events said
        self._latest.clear()

    async def positions(self) -> dict[str, PositionInfo]:
        """Changes already in ccxt's cache first (pushed while nobody waited); else the
        next push."""
        out = self._changed_positions()
        if out:
            return out
        await self._watch("watch_positions")
        if not self.alive() and (self._connecting is None or self._connecting.done()):
            # ccxt answers the first call with its REST snapshot and connects only on the
            # next one: connect now, so what is pushed from here on is not missed
            self._connecting = asyncio.ensure_future(self.ws.watch_positions())
            self._connecting.add_done_callback(_quiet)
        return self._changed_positions()

    def _client(self) -> Any:
        for url, client in list(self.ws.clients.items()):
            if "listenKey=" in str(url):
                return client
        return None

    async def wait_connected(self) -> None:
        """Until the websocket is open (after the first ``positions()``)."""
        client = self._client()
        if client is None:
            raise ExchangeUnavailable("binance stream: not subscribed yet")
        await client.connected

    def _changed_positions(self) -> dict[str, PositionInfo]:
        cache = (getattr(self.ws, "positions", None) or {}).get("linear") or []
        by_symbol: dict[str, list[tuple[str, PositionInfo]]] = {}
        for p in list(cache):
            sym, side, pos = position_of(p.get("info") or {})
            stamp = int(p.get("timestamp") or 0)
            if stamp and stamp < self._stamps.get((sym, side), 0):
                log.warning(
                    "binance stream: %s: an older position update (%d) after a newer one: ignored",
                    sym,
                    stamp,
                )
                pos = self._latest.get((sym, side), pos)
            else:
                self._stamps[(sym, side)] = max(stamp, self._stamps.get((sym, side), 0))
                self._latest[(sym, side)] = pos
            by_symbol.setdefault(sym, []).append((side, pos))
        out: dict[str, PositionInfo] = {}
        for sym, rows in by_symbol.items():
            held = [pos for _side, pos in rows if pos.amt != 0]
            if len(held) > 1:  # hedge mode, long and short at once: no snapshot (as REST)
                continue
            pos = held[0] if held else rows[-1][1]
            key = (str(pos.amt), str(pos.entry_price), str(pos.unrealized_pnl))
            if self._seen.get(sym) != key:
                self._seen[sym] = key
                out[sym] = pos
        return out

    async def orders(self) -> list[OrderInfo]:
        """As ``positions``: changes in the cache first, else the next push."""
        out = self._changed_orders()
        if out:
            return out
        await self._watch("watch_orders")
        return self._changed_orders()

    def _changed_orders(self) -> list[OrderInfo]:
        out = []
        for o in list(getattr(self.ws, "orders", None) or []):
            order = order_of(o.get("info") or {})
            if order is None:
                continue
            key = (order.status.value, str(order.filled_qty))
            if self._seen_orders.get(order.client_order_id) != key:
                self._seen_orders[order.client_order_id] = key
                out.append(order)
        if len(self._seen_orders) > 10_000:
            self._seen_orders.clear()
        return out

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        await self.ws.close()
