"""The ``Exchange`` protocol every adapter implements, and its value types.

All quantities and prices are ``Decimal``. ``round_down`` is the only rounding of a quantity
anywhere in permitchain: explicit, downward, to the exchange's own step size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

Side = Literal["BUY", "SELL"]


def round_down(qty: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` that is ≤ ``qty`` (for qty ≥ 0). Never rounds up."""
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step


def closing_side(position_amt: Decimal) -> Side:
    """The order side that reduces a signed position: SELL closes a long, BUY a short."""
    return "SELL" if position_amt > 0 else "BUY"


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    symbol: str
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal | None = None  # market-order maximum quantity
    min_notional: Decimal = Decimal(0)
    tick_size: Decimal = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class PositionInfo:
    symbol: str
    amt: Decimal  # signed: > 0 long, < 0 short
    entry_price: Decimal
    mark_price: Decimal
    leverage: Decimal = Decimal(1)
    unrealized_pnl: Decimal = Decimal(0)
    mark_time: float | None = None  # epoch seconds of the mark, when the exchange gives it

    @property
    def side(self) -> Literal["LONG", "SHORT", "NONE"]:
        return "LONG" if self.amt > 0 else "SHORT" if self.amt < 0 else "NONE"


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class OrderInfo:
    symbol: str
    client_order_id: str
    order_id: str
    side: Side
    type: str
    status: OrderStatus
    requested_qty: Decimal
    filled_qty: Decimal
    avg_price: Decimal | None
    reduce_only: bool
    stop_price: Decimal | None = None


@runtime_checkable
class Exchange(Protocol):
    """What the chain needs of an exchange. Errors are permitchain.contract.errors.ExchangeError."""

    name: str

    async def filters(self, symbols: Sequence[str] | None = None) -> dict[str, SymbolFilters]:
        """Trading filters per symbol (cached by the adapter, refreshed periodically)."""
        ...

    async def fetch_positions(
        self, symbols: Sequence[str] | None = None
    ) -> dict[str, PositionInfo]:
        """Positions of many symbols in ONE call; symbols without a position are absent."""
        ...

    async def mark_prices(self, symbols: Sequence[str] | None = None) -> dict[str, Decimal]:
        """Mark prices of many symbols in one call."""
        ...

    async def place_reduce_only_market(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        """A reduce-only market order. Same client order id twice → the existing order."""
        ...

    async def place_stop_market(
        self, symbol: str, side: Side, stop_price: Decimal, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        """A reduce-only stop-market order (UPDATE_SL); replaces our previous stop."""
        ...

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        """The order with this client order id, or None if the exchange has none."""
        ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        """Cancel the open order (a stop included) with this client order id. Returns the
        order as it stands after, or None when the exchange has no such order."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderInfo]:
        """Open orders (stops included) of one symbol, or of all, as the exchange lists them."""
        ...

    async def close(self) -> None: ...
