"""P3.3's safe close quantity leaves room for reduce-only orders resting on the symbol (else
Binance refuses the close, -4118), and the last tranche takes a remainder below the minimum
quantity (no later tranche could close it). Pure checks, then the poller against the fake
Binance through ccxt."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from permitchain.contract.errors import OrderRejected
from permitchain.contract.keys import Keys
from permitchain.contract.snapshot import Snapshot, parse_snapshot
from permitchain.exchange.binance import BinanceExchange
from permitchain.position_brain.checks import CheckConfig, PlanView, evaluate
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.runtime.clock import SystemClock
from permitchain.store import async_client
from tests.exchange.binance_helpers import adapter
from tests.fakebinance import FakeBinance

D = Decimal
NOW = 1_700_000_000.0


def judge(
    amt: str, action: str, *, min_qty: str = "0.001", resting: str = "0"
) -> tuple[bool, str, Decimal | None]:
    snap = Snapshot(
        position_amt=D(amt),
        ts_epoch=NOW - 1,
        step_size=D("0.001"),
        min_qty=D(min_qty),
        resting_reduce_qty=D(resting),
    )
    d = evaluate(
        plan=PlanView(action=action, created_at=NOW),
        snapshot=snap,
        ledger=None,
        cfg=CheckConfig(),
        now=NOW,
    )
    return d.allow, d.reason, d.safe_close_qty


@pytest.mark.parametrize(
    ("amt", "action", "min_qty", "want"),
    [
        ("0.03", "PARTIAL_75", "0.01", "0.03"),  # 0.022 would leave 0.008 < 0.01: all of it
        ("-0.03", "PARTIAL_75", "0.01", "0.03"),
        ("0.05", "PARTIAL_75", "0.01", "0.037"),  # leaves 0.013: a later tranche closes it
        ("0.062", "PARTIAL_75", "0.001", "0.046"),
        ("0.017", "PARTIAL_50", "0.01", "0.017"),  # 0.008 would leave 0.009: all of it
    ],
)
def test_last_tranche_takes_a_remainder_below_min_qty(
    amt: str, action: str, min_qty: str, want: str
) -> None:
    assert judge(amt, action, min_qty=min_qty) == (True, "ok", D(want))


def test_close_leaves_room_for_resting_reduce_only_orders() -> None:
    assert judge("0.062", "PARTIAL_50", resting="0.05") == (True, "ok", D("0.012"))
    assert judge("0.062", "PARTIAL_50", resting="0.01") == (True, "ok", D("0.031"))
    assert judge("0.062", "FULL_CLOSE_PROPOSED", resting="0.02") == (True, "ok", D("0.042"))
    # no room: refused, named
    assert judge("0.062", "PARTIAL_50", resting="0.062")[:2] == (False, "resting_reduce_only")
    assert judge("0.03", "PARTIAL_75", min_qty="0.01", resting="0.025")[:2] == (
        False,
        "resting_reduce_only",
    )
    # a stop covers the whole position: stops do not count against it
    assert judge("0.062", "UPDATE_SL", resting="0.05") == (True, "ok", D("0.062"))


def test_poller_reads_resting_orders_and_the_close_fits(
    fake: FakeBinance, redis_url: str, keys: Keys
) -> None:
    """A reduce-only order of 0.05 rests against a 0.062 long: the snapshot carries it, the
    allowed close (0.012) is taken by the exchange, the unreduced one (0.031) is not."""
    fake.set_position("BTCUSDT", "0.062")
    fake.set_fill(False)

    async def body() -> tuple[Snapshot | None, str]:
        r = async_client(redis_url)
        ex: BinanceExchange = adapter(fake)
        try:
            await ex._call(
                "order",
                "fapiPrivatePostOrder",
                {
                    "symbol": "BTCUSDT",
                    "side": "SELL",
                    "type": "MARKET",
                    "quantity": "0.05",
                    "reduceOnly": "true",
                    "newClientOrderId": "manual-rest",
                },
            )
            fake.set_fill(True)
            poller = SnapshotPoller(
                r, keys, ex, SystemClock(), allow_list=["BTCUSDT"], poll_interval_s=5
            )
            await poller.poll_once()
            snap = parse_snapshot(await r.hgetall(keys.snapshot("BTCUSDT")))
            with pytest.raises(OrderRejected) as e:
                await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.031"), "pc-big")
            assert e.value.code == -4118
            o = await ex.place_reduce_only_market("BTCUSDT", "SELL", D("0.012"), "pc-fits")
            return snap, o.status.value
        finally:
            await ex.close()
            await r.aclose()

    snap, status = asyncio.run(body())
    assert snap is not None and snap.resting_reduce_qty == D("0.05")
    plan = PlanView(action="PARTIAL_50", created_at=snap.ts_epoch)
    d = evaluate(plan=plan, snapshot=snap, ledger=None, cfg=CheckConfig(), now=snap.ts_epoch)
    assert d.safe_close_qty == D("0.012")
    assert status == "FILLED" and fake.position("BTCUSDT") == "0.05"
