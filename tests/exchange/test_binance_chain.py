"""docs/design.md §8 end to end through ccxt: the services as separate processes with
``EXCHANGE=binance-demo`` pointed at the fake Binance server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from permitchain.chain import Chain
from permitchain.exchange.binance import BinanceExchange
from permitchain.scenario import ENTRY, EXCHANGE_AMT, MARK, SYMBOL, run_scenario, seed_ledger
from permitchain.store import async_client
from tests.fakebinance import API_KEY, API_SECRET, FakeBinance

pytestmark = pytest.mark.slow


def test_reference_scenario_through_ccxt(
    chain_factory: Callable[..., Chain], redis_url: str, fake: FakeBinance
) -> None:
    fake.set_position(SYMBOL, str(EXCHANGE_AMT), entry_price=str(ENTRY))
    fake.set_price(SYMBOL, str(MARK))
    chain = chain_factory(
        EXCHANGE="binance-demo",
        BINANCE_BASE_URL=fake.url,
        BINANCE_API_KEY=API_KEY,
        BINANCE_API_SECRET=API_SECRET,
    )
    steps: dict[str, Any] = {}

    async def body() -> Any:
        r = async_client(redis_url)
        ex = BinanceExchange(API_KEY, API_SECRET, demo=True, base_url=fake.url)
        try:
            await seed_ledger(r, chain.keys)
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            return await run_scenario(r, chain.keys, ex, emit=lambda n, d: steps.update({n: d}))
        finally:
            await ex.close()
            await r.aclose()

    out = asyncio.run(body())
    first, second = steps["first_result"], steps["second_result"]
    # the first plan: P3.3 denies the qty mismatch, the executor blocks, nothing is sent
    assert first["status"] == "blocked" and first["reason"] == "p33_denied"
    assert first["p33_reason"] == "reconcile_required_qty_mismatch"
    assert steps["state"]["exchange_amt"] == "0.062" and steps["state"]["step_size"] == "0.001"
    # after reconcile: one 0.046 reduce-only market close through ccxt, filled
    assert steps["permits_second"]["position-brain"]["safe_close_qty"] == "0.046"
    assert second["status"] == "filled" and second["filled_qty"] == "0.046"
    assert second["reduce_only"] == "true"
    [order] = fake.orders(SYMBOL)
    assert order["clientOrderId"] == second["client_order_id"] != ""
    assert (order["type"], order["side"], order["origQty"]) == ("MARKET", "SELL", "0.046")
    assert order["reduceOnly"] is True and order["status"] == "FILLED"
    assert fake.request_count("/fapi/v1/order", "POST") == 1  # exactly one order sent
    assert fake.position(SYMBOL) == "0.016"
    assert steps["ledger"]["last_known_amt"] == "0.016"
    # the new stop (break-even + 0.2 %) for what is left, on the algo endpoint
    [stop] = [o for o in fake.algo_orders(SYMBOL) if o["algoStatus"] == "NEW"]
    assert (Decimal(stop["triggerPrice"]), stop["quantity"]) == (Decimal("100.2"), "0.016")
    assert stop["reduceOnly"] is True
    assert fake.unknown_paths() == []
    # pushed updates: P3.3 and the resolver opened the user data stream through ccxt.pro
    assert fake.request_count("/fapi/v1/listenKey", "POST") >= 1
    assert out.ok()
