"""Start-up and periodic reconciliation: a position mode changed while running halts
trading; open orders with the chain's prefix that it does not know make ``status``
unhealthy, listed (checked against the fake Binance through ccxt, and the sim)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from permitchain.apply_layer.exec_store import ExecStore
from permitchain.apply_layer.reconcile import Reconciler
from permitchain.apply_layer.stops import StopBook
from permitchain.cli.control import set_trading_state
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.contract.trading_state import TradingState, read_trading_state
from permitchain.exchange.sim import SimExchange
from permitchain.ops.health import gather
from permitchain.runtime.clock import SystemClock
from tests.exchange.binance_helpers import adapter
from tests.fakebinance import FakeBinance

D = Decimal
SYM = "BTCUSDT"


def reconciler(r: Any, keys: Keys, ex: Any) -> Reconciler:
    return Reconciler(r, keys, ex, ExecStore(r, keys, 3600), SystemClock(), every_s=60)


def test_position_mode_change_stops_orders_until_resumed(
    arun: Any, keys: Keys, settings: Settings, fake: FakeBinance
) -> None:
    """The mode changes while running: this apply layer stops sending orders (a restarted one
    too: it is in the report), status is unhealthy; ``resume`` accepts the new mode. The
    trading state (the operator's kill switch) is never written by the apply layer."""

    async def body(r: Any) -> tuple[Any, ...]:
        ex = adapter(fake)
        try:
            rec = reconciler(r, keys, ex)
            first = await rec.check_once()
            fake.set_dual(True)
            second = await rec.check_once()
            stopped = rec.stop_reason
            restarted = reconciler(r, keys, ex)
            await restarted.check_once()
            health = await gather(r, keys, settings)
            state = await read_trading_state(r, keys)
            await set_trading_state(
                r, keys, settings, TradingState.ACTIVE, reason="checked", operator="test"
            )
            await restarted.check_once()
            return (first, second, stopped, restarted.stop_reason, health, state)
        finally:
            await ex.close()

    first, second, stopped, after_resume, health, state = arun(body)
    assert first.position_mode == "one-way" and first.mode_changed == ""
    assert second.mode_changed == "one-way -> hedge"
    assert stopped == "position_mode_changed: one-way -> hedge"
    assert any(p.kind == "position_mode" for p in health.problems) and not health.healthy
    assert state is TradingState.ACTIVE  # untouched by the apply layer
    assert after_resume == ""


def test_executor_blocks_plans_while_stopped(arun: Any, keys: Keys, settings: Settings) -> None:
    from tests.apply_layer.bench import Bench, plan_for

    fast = settings.model_copy(update={"permit_wait_ms": 300})
    plan = plan_for(21)

    async def body(r: Any) -> dict[str, str]:
        async with Bench(r, keys, fast) as b:
            rec = reconciler(r, keys, b.sim)
            rec.stop_reason = "position_mode_changed: one-way -> hedge"
            b.ex.reconciler = rec
            await b.run(plan, qty="0.5")
            return await b.result(plan.plan_id)

    res = arun(body)
    assert (res["status"], res["reason"]) == ("blocked", "position_mode_changed")


def test_unknown_own_orders_make_status_unhealthy(
    arun: Any, keys: Keys, settings: Settings, fake: FakeBinance
) -> None:
    fake.set_position(SYM, "1")

    async def body(r: Any) -> tuple[Any, ...]:
        ex = adapter(fake)
        try:
            rec = reconciler(r, keys, ex)
            clean = await rec.check_once()
            booked = await ex.place_stop_market(SYM, "SELL", D(95), D(1), "pc-aaaaaaaaaaaaaaaa-sl")
            await StopBook(r, keys).placed(SYM, "aaaaaaaaaaaaaaaa", booked)
            # a stop with our prefix the chain never booked, and a hand-placed one
            await ex._call(
                "order",
                "fapiPrivatePostAlgoOrder",
                {
                    "algoType": "CONDITIONAL",
                    "symbol": SYM,
                    "side": "SELL",
                    "type": "STOP_MARKET",
                    "quantity": "1",
                    "triggerPrice": "90",
                    "reduceOnly": "true",
                    "clientAlgoId": "pc-bbbbbbbbbbbbbbbb-sl",
                },
            )
            await ex._call(
                "order",
                "fapiPrivatePostAlgoOrder",
                {
                    "algoType": "CONDITIONAL",
                    "symbol": SYM,
                    "side": "SELL",
                    "type": "STOP_MARKET",
                    "quantity": "1",
                    "triggerPrice": "91",
                    "reduceOnly": "true",
                    "clientAlgoId": "manual-1",
                },
            )
            dirty = await rec.check_once()
            return clean, dirty, await gather(r, keys, settings)
        finally:
            await ex.close()

    clean, dirty, health = arun(body)
    assert clean.unknown_orders == []
    assert dirty.unknown_orders == ["BTCUSDT pc-bbbbbbbbbbbbbbbb-sl NEW"]
    [problem] = [p for p in health.problems if p.kind == "unknown_orders"]
    assert "pc-bbbbbbbbbbbbbbbb-sl" in problem.what and "manual-1" not in problem.what


def test_sim_reconciles_too(arun: Any, keys: Keys) -> None:
    async def body(r: Any) -> Any:
        sim = SimExchange(r, keys)
        await sim.set_position(SYM, D(1), D(100))
        await sim.place_stop_market(SYM, "SELL", D(95), D(1), "pc-cccccccccccccccc-sl")
        return await reconciler(r, keys, sim).check_once()

    rep = arun(body)
    assert rep.position_mode == "one-way"
    assert rep.unknown_orders == ["BTCUSDT pc-cccccccccccccccc-sl NEW"]
