"""The Freqtrade mixin refuses an exit when the chain cannot be asked (Freqtrade itself would
turn the error into an allowed exit). Needs no Freqtrade: the mixin imports none of it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from permitchain_client.freqtrade import PermitchainExitMixin


class Strategy(PermitchainExitMixin):
    def __init__(self) -> None:
        self.config = {"permitchain": {"url": "redis://127.0.0.1:1/0", "wait_s": 1}}


def test_no_chain_no_exit() -> None:
    trade = SimpleNamespace(id=1, pair="BTC/USDT", amount=0.01, stake_amount=1.0, exit_side="sell")
    allowed = Strategy().confirm_trade_exit(
        "BTC/USDT",
        trade,
        "market",
        0.01,
        100.0,
        "GTC",
        "exit_signal",
        datetime.now(UTC),
    )
    assert allowed is False
