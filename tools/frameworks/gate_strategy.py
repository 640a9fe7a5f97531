"""A Freqtrade strategy for the gate's backtest (tools/frameworks/freqtrade_backtest.py).

One long trade on the first candle; then, by minutes after it: a partial exit the chain
skips (kill score 0.3, below the threshold), a partial exit it allows (0.8), Freqtrade's own
exit signal with a kill score the chain skips (0.2), and one it allows (0.9). The simulated
exchange of the chain mirrors the trade (``permitchain sim``): the entry sets the position,
each allowed exit is sent there with the gate's client order id. Events go to $GATE_EVENTS.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from freqtrade.strategy import IStrategy
from mirror import event, sim, wait_chain_sees_exchange
from pandas import DataFrame

from permitchain_client.freqtrade import ExitIntent, PermitchainExitMixin

SYMBOL = "UNITTESTBTC"
START = datetime.fromisoformat("2017-11-05T00:00:00+00:00")
PARTIALS = {20: ExitIntent("PARTIAL_50", "0.3"), 40: ExitIntent("PARTIAL_50", "0.8")}
FULL_SCORES = {50: "0.2", 60: "0.9"}


def minute(t: datetime) -> int:
    return int((t - START) / timedelta(minutes=1))


class GateStrategy(PermitchainExitMixin, IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {"0": 100}
    stoploss = -0.99
    position_adjustment_enable = True
    use_exit_signal = True
    startup_candle_count = 0

    def populate_indicators(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        dataframe["enter_long"] = (dataframe["date"] == START).astype(int)
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        minutes = ((dataframe["date"] - START) / timedelta(minutes=1)).astype(int)
        dataframe["exit_long"] = minutes.isin([m - 1 for m in FULL_SCORES]).astype(int)
        return dataframe

    def permitchain_exit(
        self, trade: Any, current_time: datetime, current_rate: float, current_profit: float
    ) -> ExitIntent | None:
        intent = PARTIALS.get(minute(current_time))
        if intent is not None:
            event(
                kind="intent",
                minute=minute(current_time),
                action=intent.action,
                kill_score=intent.kill_score,
            )
        return intent

    def permitchain_kill_score(
        self, pair: str, trade: Any, exit_reason: str, rate: float, current_time: datetime
    ) -> str:
        score = FULL_SCORES.get(minute(current_time), "0")
        event(
            kind="intent",
            minute=minute(current_time),
            action="FULL_CLOSE_PROPOSED",
            kill_score=score,
            exit_reason=exit_reason,
        )
        return score

    def adjust_trade_position(
        self, trade: Any, current_time: datetime, *args: Any, **kwargs: Any
    ) -> Any:
        out = super().adjust_trade_position(trade, current_time, *args, **kwargs)
        if out is not None:
            event(kind="adjust", minute=minute(current_time), stake=out[0], tag=out[1])
        return out

    def confirm_trade_exit(self, pair: str, trade: Any, **kwargs: Any) -> bool:
        # Freqtrade passes the hook's arguments by name: the mixin's signature reads them
        ok = super().confirm_trade_exit(pair, trade, **kwargs)
        event(
            kind="confirm",
            minute=minute(kwargs["current_time"]),
            amount=kwargs["amount"],
            allowed=ok,
            exit_reason=kwargs["exit_reason"],
            gate=self.permitchain_log[-1],
        )
        return ok

    def order_filled(
        self, pair: str, trade: Any, order: Any, current_time: datetime, **kwargs: Any
    ) -> None:
        amount = repr(float(order.safe_filled))
        if order.ft_order_side == trade.entry_side:
            sim("set-position", SYMBOL, amount, "--entry", repr(order.safe_price))
            event(kind="entry", minute=minute(current_time), amount=amount)
            wait_chain_sees_exchange(SYMBOL)
            return
        gated = self._pc_by_tag.get(order.ft_order_tag or "") or self._pc_by_trade.get(trade.id)
        coid = gated.client_order_id if gated else ""
        # the exit reaches the exchange with the gate's client order id
        sent = json.loads(sim("order", SYMBOL, "SELL", amount, "--client-order-id", coid, "--json"))
        event(
            kind="exit",
            minute=minute(current_time),
            amount=amount,
            tag=order.ft_order_tag,
            client_order_id=coid,
            exchange_status=sent["status"],
            plan_id=gated.plan_id if gated else "",
        )
        super().order_filled(pair, trade, order, current_time, **kwargs)
        wait_chain_sees_exchange(SYMBOL)
        event(kind="log", entries=self.permitchain_log)
