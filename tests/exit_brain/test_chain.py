"""The whole chain as ``permitchain up`` runs it (separate processes, sim exchange, the price
driver on): from a seeded price path to a proposal, a plan and a reduce-only close, with
no manual input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from permitchain.chain import Chain
from permitchain.exchange.sim import SimExchange
from permitchain.keys import Keys
from permitchain.store import async_client

pytestmark = pytest.mark.slow
SYM = "BTCUSDT"


async def first_fill(r: Any, keys: Keys, timeout_s: float) -> dict[str, str]:
    """Block on the result stream until a filled result arrives."""
    last, deadline = "0-0", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for _s, entries in await r.xread({keys.result_stream: last}, count=100, block=500) or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get("status") == "filled":
                    return dict(fields)
    raise TimeoutError(f"no filled result after {timeout_s}s")


def test_seeded_prices_lead_to_proposals_plans_and_a_close(
    chain_factory: Callable[..., Chain], redis_url: str
) -> None:
    chain = chain_factory(
        ALLOW_LIST_SYMBOLS=SYM, EXIT_INTERVAL_S="0.2", SIM_PRICE_INTERVAL_S="0.2", EXIT_BAR_S="0.2",
        SIM_PRICE_SEED="7",
    )  # fmt: skip
    keys = chain.keys

    async def body() -> Any:
        r = async_client(redis_url)
        sim = SimExchange(r, keys)
        try:
            await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", tick_size="0.1")
            await sim.set_position(SYM, Decimal("0.062"), Decimal(100))
            await sim.set_price(SYM, Decimal(107))
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            result = await first_fill(r, keys, timeout_s=60)
            proposals = [f for _i, f in await r.xrange(keys.proposal_stream)]
            plans = [f for _i, f in await r.xrange(keys.plan_stream)]
            position = (await sim.fetch_positions([SYM]))[SYM].amt
            fills = [f for _i, f in await r.xrange(keys.sim_fills)]
            return result, proposals, plans, position, fills
        finally:
            await r.aclose()

    result, proposals, plans, position, fills = asyncio.run(body())
    ours = {p["proposal_id"]: p for p in proposals if p["source"] == "exit-brain"}
    assert ours, "the exit brain proposed nothing"
    plan = next(p for p in plans if p["plan_id"] == result["plan_id"])
    assert plan["decision"] == "EXECUTE" and plan["proposal_id"] in ours
    proposal = ours[plan["proposal_id"]]
    assert proposal["action"] in ("PARTIAL_75", "FULL_CLOSE_PROPOSED")  # R_net ≈ 6.9 at 107
    assert result["reduce_only"] == "true" and result["side"] == "SELL"
    assert Decimal(result["filled_qty"]) > 0
    assert Decimal(0) <= position < Decimal("0.062")
    assert any(f["client_order_id"] == result["client_order_id"] for f in fills)
