"""NautilusTrader backtest through permitchain's gate, offline: run with the python of a
virtual environment that has ``nautilus_trader`` and ``permitchain-client``
(tools/frameworks/setup.sh).

    python nautilus_backtest.py --redis-url URL --key-prefix PREFIX --out events.jsonl

Bars: ``../shared/data/klines/ETH_BTC-5m.csv`` as an ETHBTC perpetual on a simulated
BINANCE venue. The strategy buys 1 ETHBTC, then sends reduce-only exits through the
``PermitchainGate`` exec algorithm: one the chain skips (kill score 0.3), one it allows, one
asking for more than the gate grants (sent with the gate's quantity), and a full close. The
chain's simulated exchange mirrors the position (``permitchain sim``); every decision and
fill goes to ``--out``.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

from mirror import argument_parser, event, sim, use, wait_chain_sees_exchange
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import BTC, ETH
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import ExecAlgorithmId, InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.model.orders import Order
from nautilus_trader.trading.strategy import Strategy

from permitchain_client import Claim
from permitchain_client.nautilus import PermitchainGate, PermitchainGateConfig

HERE = Path(__file__).resolve().parent
KLINES = HERE.parents[1].parent / "shared" / "data" / "klines" / "ETH_BTC-5m.csv"
SYMBOL = "ETHBTC"
VENUE = Venue("BINANCE")
INSTRUMENT_ID = InstrumentId(Symbol("ETHBTC-PERP"), VENUE)
#: bar number → (action, kill score, quantity asked)
EXITS = {
    20: ("PARTIAL_50", "0.3", "0.5"),
    40: ("PARTIAL_50", "0.8", "0.5"),
    60: ("PARTIAL_50", "0.8", "0.5"),
    80: ("FULL_CLOSE_PROPOSED", "0.9", "0.25"),
}


class MirroredGate(PermitchainGate):
    """The gate algorithm, plus the mirror: a gated fill also goes to the chain's simulated
    exchange, with the gate's client order id, before it is reported."""

    def on_gate_fill(self, order: Order, claim: Claim) -> None:
        qty = str(order.filled_qty)
        sent = json.loads(
            sim("order", SYMBOL, "SELL", qty, "--client-order-id", claim.client_order_id, "--json")
        )
        event(
            kind="exit",
            plan_id=claim.plan_id,
            qty=qty,
            client_order_id=claim.client_order_id,
            nautilus_order=order.client_order_id.value,
            tags=order.tags,
            reduce_only=order.is_reduce_only,
            exchange_status=sent["status"],
        )

    def on_order_filled(self, event_: OrderFilled) -> None:
        super().on_order_filled(event_)
        if not self.claims:
            wait_chain_sees_exchange(SYMBOL)


class ExitsConfig(StrategyConfig, frozen=True):
    bar_type: str


class Exits(Strategy):
    def __init__(self, config: ExitsConfig) -> None:
        super().__init__(config)
        self.bars = 0
        self.bar_type = BarType.from_str(config.bar_type)

    def on_start(self) -> None:
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1
        if self.bars == 1:
            self.submit_order(
                self.order_factory.market(INSTRUMENT_ID, OrderSide.BUY, Quantity.from_str("1.000"))
            )
            return
        spec = EXITS.get(self.bars)
        if spec is None:
            return
        action, score, asked = spec
        event(kind="intent", bar=self.bars, action=action, kill_score=score, asked=asked)
        self.submit_order(
            self.order_factory.market(
                INSTRUMENT_ID,
                OrderSide.SELL,
                Quantity.from_str(asked),
                reduce_only=True,
                exec_algorithm_id=ExecAlgorithmId("PCGATE"),
                tags=[f"pc:action={action}", f"pc:kill_score={score}"],
            )
        )

    def on_order_filled(self, event_: OrderFilled) -> None:
        if event_.order_side == OrderSide.BUY:
            qty = str(event_.last_qty)
            sim("set-position", SYMBOL, qty, "--entry", str(event_.last_px))
            event(kind="entry", qty=qty, price=str(event_.last_px))
            wait_chain_sees_exchange(SYMBOL)


def instrument() -> CryptoPerpetual:
    return CryptoPerpetual(
        instrument_id=INSTRUMENT_ID,
        raw_symbol=Symbol("ETHBTC"),
        base_currency=ETH,
        quote_currency=BTC,
        settlement_currency=BTC,
        is_inverse=False,
        price_precision=6,
        size_precision=3,
        price_increment=Price.from_str("0.000001"),
        size_increment=Quantity.from_str("0.001"),
        max_quantity=Quantity.from_str("10000.000"),
        min_quantity=Quantity.from_str("0.001"),
        max_notional=None,
        min_notional=None,
        max_price=Price.from_str("10.000000"),
        min_price=Price.from_str("0.000001"),
        margin_init=Decimal("0.1"),
        margin_maint=Decimal("0.05"),
        maker_fee=Decimal("0.0002"),
        taker_fee=Decimal("0.0004"),
        ts_event=0,
        ts_init=0,
    )


def bars(bar_type: BarType, path: Path, limit: int) -> list[Bar]:
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            ts = int(row["open_time"]) * 1_000_000 + 5 * 60 * 10**9  # closed at the end
            o, h, lo, c = (
                Price.from_str(f"{float(row[k]):.6f}") for k in ("open", "high", "low", "close")
            )
            out.append(
                Bar(bar_type, o, h, lo, c, Quantity.from_str(f"{float(row['volume']):.3f}"), ts, ts)
            )
            if len(out) >= limit:
                break
    return out


def main() -> None:
    args = argument_parser(KLINES).parse_args()
    use(args)
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=None,
        starting_balances=[Money(100, BTC)],
    )
    engine.add_instrument(instrument())
    bar_type = BarType.from_str(f"{INSTRUMENT_ID}-5-MINUTE-LAST-EXTERNAL")
    engine.add_data(bars(bar_type, Path(args.klines), 120))
    gate = MirroredGate(
        PermitchainGateConfig(url=args.redis_url, key_prefix=args.key_prefix, wait_s=20)
    )
    engine.add_exec_algorithm(gate)
    engine.add_strategy(Exits(ExitsConfig(bar_type=str(bar_type))))
    engine.run()
    position = engine.cache.positions(instrument_id=INSTRUMENT_ID)
    event(
        kind="log",
        decisions=gate.decisions,
        nautilus_position=[str(p.quantity) for p in position],
        nautilus_orders=[
            {
                "id": o.client_order_id.value,
                "side": o.side_string(),
                "qty": str(o.quantity),
                "filled": str(o.filled_qty),
                "status": o.status_string(),
                "reduce_only": o.is_reduce_only,
                "tags": o.tags,
            }
            for o in engine.cache.orders()
        ],
    )
    engine.dispose()


if __name__ == "__main__":
    main()
