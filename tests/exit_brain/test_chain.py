"""The whole chain as ``permitchain up`` runs it (separate processes, sim exchange, the price
driver on): from a seeded price path to a proposal, a plan and a reduce-only close, with
no manual input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.api import expected_plan_id
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
        ALLOW_LIST_SYMBOLS=SYM,
        EXIT_INTERVAL_S="0.2",
        SIM_PRICE_INTERVAL_S="0.2",
        EXIT_BAR_S="0.2",
        SIM_PRICE_SEED="7",
    )
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
            await r.hset(keys.ledger(SYM), "last_order_time_epoch", f"{time.time():.6f}")
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


def test_a_denied_tranche_stays_available_until_the_chain_executes_it(
    chain_factory: Callable[..., Chain], redis_url: str
) -> None:
    """P3.3 denies the first plans (an order just now: cooldown); the exit brain learns each
    plan's outcome, keeps PARTIAL_25 available and proposes it again after EXIT_RETRY_S,
    as a new plan, until the chain fills it; only then is the tranche spent."""
    chain = chain_factory(
        ALLOW_LIST_SYMBOLS=SYM,
        EXIT_INTERVAL_S="0.1",
        EXIT_BAR_S="0.2",
        EXIT_RETRY_S="1",
        COOLDOWN_S="4",
    )
    keys = chain.keys

    async def body() -> Any:
        r = async_client(redis_url)
        sim = SimExchange(r, keys)
        try:
            await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", tick_size="0.1")
            await sim.set_position(SYM, Decimal("0.062"), Decimal(100))
            await sim.set_price(SYM, Decimal("102.5"))  # R ≈ 2.4: PARTIAL_25 (+ stop move)
            await r.hset(
                keys.ledger(SYM),
                mapping={
                    "last_known_amt": "0.062",
                    "epoch": "0",
                    "last_order_time_epoch": f"{time.time():.6f}",
                },
            )
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            await r.hset(keys.ledger(SYM), "last_order_time_epoch", f"{time.time():.6f}")
            result = await first_fill(r, keys, timeout_s=60)
            proposals = [f for _i, f in await r.xrange(keys.proposal_stream)]
            states = {
                p["proposal_id"]: await r.hget(
                    keys.exec_record(expected_plan_id(Proposal.from_fields(p))), "state"
                )
                for p in proposals
            }
            deadline = time.monotonic() + 10
            book = await r.hgetall(keys.exit_state(SYM))
            while book.get("tranches_done") != "1" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # the brain reads the outcome at its next cycle
                book = await r.hgetall(keys.exit_state(SYM))
            return result, proposals, states, book
        finally:
            await r.aclose()

    result, proposals, states, book = asyncio.run(body())
    ours = [p for p in proposals if p["source"] == "exit-brain"]
    assert [p["action"] for p in ours] == ["PARTIAL_25"] * len(ours) and len(ours) >= 2
    assert [int(p["tranche"]) for p in ours] == list(range(1, len(ours) + 1))  # a new plan each
    *denied, done = ours
    assert all(states[p["proposal_id"]] == "blocked" for p in denied)
    assert states[done["proposal_id"]] == "filled"
    assert result["plan_id"] == expected_plan_id(Proposal.from_fields(done))
    assert all(float(b["ts_epoch"]) - float(a["ts_epoch"]) >= 1 for a, b in pairwise(ours))
    assert book["tranches_done"] == "1" and book["stop"] == "100.2" and book["pending_action"] == ""
