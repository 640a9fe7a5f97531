"""The reference scenario of docs/design.md §8, as code: ``permitchain demo`` prints it, the
integration tests assert it. The chain's services must already be running.

BTCUSDT, exchange position 0.062, ledger 0.002 (the position grew outside the chain):
the exit brain proposes PARTIAL_75 with a new stop at 100.2; P3.3 denies with
``reconcile_required_qty_mismatch`` and the executor blocks, no order. After
``reconcile`` the next plan closes 0.046 reduce-only, fills, and the ledger reads 0.016.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal, fmt_decimal, make_plan_id
from permitchain.exchange.base import Exchange
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.api import current_epoch, new_proposal_id, submit_proposal
from permitchain.exit_brain.kernel import (
    Components,
    break_even_stop,
    harvest_action,
    kill_score,
)
from permitchain.ops import reads as rd
from permitchain.position_brain.state import reconcile
from permitchain.store import AsyncRedis, async_client

SYMBOL = "BTCUSDT"
ENTRY = Decimal(100)
MARK = Decimal(107)
EXCHANGE_AMT = Decimal("0.062")
LEDGER_AMT = Decimal("0.002")
COMPONENTS = Components(regime_flip=0, sigma_spike=0.1084, ts_drop=0.1789, age_penalty=0.0417)
R_NET = Decimal("7.0136")

Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class Outcome:
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ok(self) -> bool:
        first = self.steps.get("first_result", {})
        second = self.steps.get("second_result", {})
        ledger = self.steps.get("ledger", {})
        return (
            first.get("status") == "blocked"
            and first.get("p33_reason") == "reconcile_required_qty_mismatch"
            and second.get("status") == "filled"
            and second.get("filled_qty") == "0.046"
            and ledger.get("last_known_amt") == "0.016"
        )


async def seed(r: AsyncRedis, keys: Keys, *, ledger: bool = True) -> SimExchange:
    """The reference position on the simulated exchange and, unless ``ledger=False``, the
    demo's ledger of 0.002. Returns the simulated exchange."""
    sim = SimExchange(r, keys)
    await sim.list_symbol(SYMBOL, step_size="0.001", min_qty="0.001", min_notional="5")
    await sim.set_position(SYMBOL, EXCHANGE_AMT, ENTRY)
    await sim.set_price(SYMBOL, MARK)
    if ledger:
        await seed_ledger(r, keys)
    return sim


def run_reference(
    chain: Chain, url: str, *, emit: Emit, on_ready: Callable[[], None] | None = None
) -> Outcome:
    """Seed, start the chain's services (separate processes), run the scenario through them.
    The services keep running afterwards; the caller stops the chain."""

    async def body() -> Outcome:
        r = async_client(url)
        try:
            sim = await seed(r, chain.keys)
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            if on_ready is not None:
                on_ready()
            return await run_scenario(r, chain.keys, sim, emit=emit)
        finally:
            await r.aclose()

    return asyncio.run(body())


async def seed_ledger(r: AsyncRedis, keys: Keys) -> None:
    """The demo's ledger: 0.002, as if the position grew outside the chain."""
    await r.hset(
        keys.ledger(SYMBOL),
        mapping={
            "last_known_amt": fmt_decimal(LEDGER_AMT),
            "last_known_side": "LONG",
            "epoch": "0",
            "last_update_ts": f"{time.time():.6f}",
        },
    )


async def wait_snapshot(r: AsyncRedis, keys: Keys, timeout_s: float = 20.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        h: dict[str, str] = await r.hgetall(keys.snapshot(SYMBOL))
        if h:
            return h
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no exchange snapshot for {SYMBOL} after {timeout_s}s")


async def wait_result(
    r: AsyncRedis, keys: Keys, plan_id: str, timeout_s: float = 20.0
) -> dict[str, str]:
    """Block on the result stream (every shard) until this plan's result arrives."""
    last = dict.fromkeys(keys.result_streams, "0-0")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for stream, entries in await rd.xread(r, last, count=100, block_ms=500):
            for entry_id, fields in entries:
                last[stream] = entry_id
                if fields.get("plan_id") == plan_id:
                    return dict(fields)
    raise TimeoutError(f"no result for plan {plan_id} after {timeout_s}s")


async def audit_for(r: AsyncRedis, keys: Keys, plan_id: str) -> list[dict[str, Any]]:
    out = []
    for _id, f in await r.xrange(keys.decisions, "-", "+"):
        if f.get("plan_id") == plan_id:
            out.append({**f, "context": json.loads(f.get("context") or "{}")})
    return out


async def wait_ledger(
    r: AsyncRedis, keys: Keys, amt: str, timeout_s: float = 10.0
) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    h: dict[str, str] = {}
    while time.monotonic() < deadline:
        h = await r.hgetall(keys.ledger(SYMBOL))
        if h.get("last_known_amt") == amt:
            return h
        await asyncio.sleep(0.02)
    return h


async def propose_reference(r: AsyncRedis, keys: Keys, proposal_ttl_s: int) -> tuple[Proposal, str]:
    score = kill_score(COMPONENTS)
    action, tranche = harvest_action(R_NET, 0) or (None, 0)
    assert action is not None
    epoch = await current_epoch(r, keys, SYMBOL)
    p = Proposal(
        proposal_id=new_proposal_id(),
        symbol=SYMBOL,
        action=action.value,
        kill_score=score,
        k_regime_flip=Decimal(str(COMPONENTS.regime_flip)),
        k_sigma_spike=Decimal(str(COMPONENTS.sigma_spike)),
        k_ts_drop=Decimal(str(COMPONENTS.ts_drop)),
        k_age_penalty=Decimal(str(COMPONENTS.age_penalty)),
        new_sl=break_even_stop(ENTRY, is_long=True),
        r_net=R_NET,
        position_epoch=epoch,
        tranche=tranche,
        ts_epoch=time.time(),
        source="demo",
    )
    await submit_proposal(r, keys, p, ttl_s=proposal_ttl_s)
    return p, make_plan_id(p.symbol, p.action, p.position_epoch, p.tranche)


async def wait_audit(
    r: AsyncRedis,
    keys: Keys,
    plan_id: str,
    layers: tuple[str, ...] = ("governor", "position-brain"),
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """The plan's audit entries once every named layer has written one (a deny can end the
    plan before the other gatekeeper's entry lands)."""
    deadline = time.monotonic() + timeout_s
    while True:
        audit = await audit_for(r, keys, plan_id)
        if {a["layer"] for a in audit} >= set(layers) or time.monotonic() > deadline:
            return audit
        await r.xread({keys.decisions: "$"}, block=200)  # wake on the next audit entry


def _permits(audit: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for a in audit:
        if a["layer"] in ("governor", "position-brain") and "permit" in a["context"]:
            out[a["layer"]] = a["context"]["permit"]
    return out


async def run_scenario(
    r: AsyncRedis, keys: Keys, exchange: Exchange, *, emit: Emit, proposal_ttl_s: int = 60
) -> Outcome:
    out = Outcome()

    def step(name: str, data: dict[str, Any]) -> None:
        out.steps[name] = data
        emit(name, data)

    snap = await wait_snapshot(r, keys)
    ledger = await r.hgetall(keys.ledger(SYMBOL))
    step(
        "state",
        {
            "exchange_amt": snap["position_amt"],
            "mark_price": snap["mark_price"],
            "ledger_amt": ledger.get("last_known_amt"),
            "step_size": snap["step_size"],
        },
    )

    p1, plan1 = await propose_reference(r, keys, proposal_ttl_s)
    step("proposal", {"proposal": p1.to_fields(), "plan_id": plan1})
    res1 = await wait_result(r, keys, plan1)
    audit1 = await wait_audit(r, keys, plan1)
    permits1 = _permits(audit1)
    step("permits_first", permits1)
    step("first_result", {**res1, "p33_reason": permits1.get("position-brain", {}).get("reason")})

    positions = await exchange.fetch_positions([SYMBOL])
    change = await reconcile(
        r,
        keys,
        SYMBOL,
        positions[SYMBOL].amt,
        operator="demo",
        note="position grew outside the chain",
    )
    step("reconcile", change)

    p2, plan2 = await propose_reference(r, keys, proposal_ttl_s)
    step("proposal_second", {"proposal": p2.to_fields(), "plan_id": plan2})
    res2 = await wait_result(r, keys, plan2)
    step("permits_second", _permits(await wait_audit(r, keys, plan2)))
    order = await exchange.fetch_order(SYMBOL, res2.get("client_order_id", ""))
    step("order", {"order": dataclasses.asdict(order) if order else None})
    step("second_result", res2)
    step("ledger", await wait_ledger(r, keys, "0.016"))
    return out
