"""Freqtrade backtest through permitchain's gate, offline: run with the python of a virtual
environment that has ``freqtrade`` and ``permitchain-client`` (tools/frameworks/README.md).

    python freqtrade_backtest.py --redis-url URL --key-prefix PREFIX --out events.jsonl

Reads ``../shared/data/klines/UNITTEST_BTC-1m.csv`` (Freqtrade's own test candles), writes
them in Freqtrade's JSON layout to a temporary data directory, gives Freqtrade the market
it would load from the exchange (it has no network here), and backtests
``tools/frameworks/gate_strategy.py``: each exit goes through the gate, the chain's
simulated exchange mirrors the trade's position (``permitchain sim``), and every decision
and order is appended to ``--out``.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from mirror import argument_parser, use

HERE = Path(__file__).resolve().parent
KLINES = HERE.parents[1].parent / "shared" / "data" / "klines" / "UNITTEST_BTC-1m.csv"
PAIR = "UNITTEST/BTC"
#: The market Freqtrade would load from Binance: spot, amount step 0.001.
MARKET: dict[str, Any] = {
    "id": "UNITTESTBTC",
    "symbol": PAIR,
    "base": "UNITTEST",
    "quote": "BTC",
    "baseId": "UNITTEST",
    "quoteId": "BTC",
    "active": True,
    "type": "spot",
    "spot": True,
    "margin": False,
    "swap": False,
    "future": False,
    "option": False,
    "contract": False,
    "linear": None,
    "inverse": None,
    "contractSize": None,
    "taker": 0.001,
    "maker": 0.001,
    "precision": {"amount": 0.001, "price": 1e-8},
    "limits": {
        "amount": {"min": 0.001, "max": 1e6},
        "price": {"min": 1e-8, "max": 1e3},
        "cost": {"min": 1e-5, "max": None},
        "leverage": {"min": 1, "max": 1},
    },
    "info": {},
}


def write_candles(klines: Path, datadir: Path) -> None:
    rows = []
    with klines.open() as f:
        for row in csv.DictReader(f):
            rows.append(
                [
                    int(row["open_time"]),
                    float(row["open"]),
                    float(row["high"]),
                    float(row["low"]),
                    float(row["close"]),
                    float(row["volume"]),
                ]
            )
    target = datadir
    target.mkdir(parents=True, exist_ok=True)
    (target / "UNITTEST_BTC-1m.json").write_text(json.dumps(rows))


def offline_markets() -> None:
    """Freqtrade loads markets from the exchange: give it the one market instead."""
    from freqtrade.exchange.exchange import Exchange

    async def load(self: Any, reload: bool = False) -> None:
        self._api_async.set_markets([MARKET])

    Exchange._api_reload_markets = load  # type: ignore[method-assign]
    Exchange.fetch_trading_fees = lambda self: {}  # type: ignore[method-assign]


def main() -> None:
    ap = argument_parser(KLINES)
    ap.add_argument("--timerange", default="1509840000-1509845400")  # 2017-11-05 00:00, 90 min
    args = ap.parse_args()
    use(args)
    with tempfile.TemporaryDirectory() as tmp:
        datadir, userdir = Path(tmp) / "data", Path(tmp) / "user"
        write_candles(Path(args.klines), datadir)
        for sub in ("strategies", "data", "backtest_results", "logs"):
            (userdir / sub).mkdir(parents=True, exist_ok=True)
        config = {
            "exchange": {"name": "binance", "pair_whitelist": [PAIR], "key": "", "secret": ""},
            "stake_currency": "BTC",
            "stake_amount": 0.01,
            "dry_run_wallet": 1,
            "max_open_trades": 1,
            "timeframe": "1m",
            "dry_run": True,
            "trading_mode": "spot",
            "dataformat_ohlcv": "json",
            "entry_pricing": {"price_side": "same"},
            "exit_pricing": {"price_side": "same"},
            "pairlists": [{"method": "StaticPairList"}],
            "permitchain": {"url": args.redis_url, "key_prefix": args.key_prefix, "wait_s": 20},
        }
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(config))
        offline_markets()
        from freqtrade.main import main as freqtrade_main

        freqtrade_main(
            [
                "backtesting",
                "--config",
                str(cfg),
                "--strategy",
                "GateStrategy",
                "--strategy-path",
                str(HERE),
                "--datadir",
                str(datadir),
                "--userdir",
                str(userdir),
                "--timerange",
                args.timerange,
                "--export",
                "none",
                "--cache",
                "none",
            ]
        )


if __name__ == "__main__":
    main()
