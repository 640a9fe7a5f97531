"""make_exchange: the startup rules for Binance, and the fake as a separate process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from permitchain.contract.errors import ConfigError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import load_settings
from permitchain.exchange.binance import BinanceExchange
from permitchain.exchange.factory import check_exchange_settings, make_exchange
from tests.fakebinance import API_KEY, API_SECRET, AdminClient

KEYS = {"BINANCE_API_KEY": API_KEY, "BINANCE_API_SECRET": API_SECRET}
FAKE = Path(__file__).resolve().parent.parent / "fakebinance.py"


def build(**env: str) -> Any:
    # make_exchange keeps the Redis client for the simulated exchange only; Binance ignores it
    return make_exchange(load_settings(env, env_file=""), None, Keys("t"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"EXCHANGE": "binance-demo"}, "BINANCE_API_KEY"),
        ({"EXCHANGE": "binance-demo", "BINANCE_API_KEY": "k"}, "BINANCE_API_SECRET"),
        ({"EXCHANGE": "binance", "APPLY_MODE": "production"}, "BINANCE_API_KEY"),
        ({"EXCHANGE": "binance", "APPLY_MODE": "testnet", **KEYS}, "APPLY_MODE"),
        ({"EXCHANGE": "binance", "APPLY_MODE": "production", **KEYS}, "BINANCE_LIVE_CONFIRMED"),
        (
            {
                "EXCHANGE": "binance",
                "APPLY_MODE": "production",
                "BINANCE_LIVE_CONFIRMED": "false",
                **KEYS,
            },
            "BINANCE_LIVE_CONFIRMED",
        ),
        (
            {"EXCHANGE": "binance-demo", "BINANCE_BASE_URL": "127.0.0.1:9", **KEYS},
            "BINANCE_BASE_URL",
        ),
    ],
)
def test_refused_configurations_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(**env)
    assert variable in str(e.value)
    assert API_SECRET not in str(e.value)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"EXCHANGE": "binance-demo", **KEYS}, "binance-demo"),
        ({"EXCHANGE": "binance-demo", "APPLY_MODE": "dry_run", **KEYS}, "binance-demo"),
        ({"EXCHANGE": "binance", "APPLY_MODE": "dry_run", **KEYS}, "binance"),
        (
            {
                "EXCHANGE": "binance",
                "APPLY_MODE": "production",
                "BINANCE_LIVE_CONFIRMED": "true",
                **KEYS,
            },
            "binance",
        ),
    ],
)
def test_accepted_configurations(env: dict[str, str], name: str) -> None:
    ex = build(**env)
    assert isinstance(ex, BinanceExchange) and ex.name == name
    urls = ex._api.urls["api"]
    assert ("demo-fapi" in urls["fapiPrivate"]) is (name == "binance-demo")
    assert API_SECRET not in repr(ex)
    asyncio.run(ex.close())


def test_sim_needs_no_binance_settings() -> None:
    check_exchange_settings(load_settings({}, env_file=""))


def test_fake_runs_as_a_process_and_the_adapter_reaches_it() -> None:
    """The chain's services are separate processes: the fake runs standalone too."""
    proc = subprocess.Popen(
        [sys.executable, str(FAKE), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("FAKEBINANCE_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        admin = AdminClient(url)
        admin.call("set_position", symbol="BTCUSDT", amt="0.062")

        async def body() -> None:
            ex = build(EXCHANGE="binance-demo", BINANCE_BASE_URL=url, **KEYS)
            try:
                pos = await ex.fetch_positions(["BTCUSDT"])
                assert pos["BTCUSDT"].amt == Decimal("0.062")
                o = await ex.place_reduce_only_market("BTCUSDT", "SELL", Decimal("0.046"), "pc-p")
                assert o.filled_qty == Decimal("0.046")
            finally:
                await ex.close()

        asyncio.run(body())
        assert admin.call("position", symbol="BTCUSDT") == "0.016"
        assert admin.call("request_count", path="/fapi/v1/order", method="POST") == 1
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
