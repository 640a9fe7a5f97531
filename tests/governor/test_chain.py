"""The governor in the running chain (services as separate processes): the kill switch from
the CLI, and a stale backlog that both gatekeepers refuse."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, Proposal, make_plan_id
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.api import current_epoch, new_proposal_id, submit_proposal
from permitchain.keyfiles import generate
from permitchain.scenario import (
    ENTRY,
    MARK,
    SYMBOL,
    audit_for,
    wait_result,
    wait_snapshot,
)
from permitchain.store import async_client

from .plans import plan

pytestmark = pytest.mark.slow
PLAN_MAX_AGE_S = 30


def ctl(chain: Chain, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env=chain.child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


async def propose(
    r: Redis, keys: Keys, action: Action, tranche: int, new_sl: Decimal | None = None
) -> str:
    epoch = await current_epoch(r, keys, SYMBOL)
    p = Proposal(
        proposal_id=new_proposal_id(),
        symbol=SYMBOL,
        action=action.value,
        kill_score=Decimal("0.7"),
        position_epoch=epoch,
        tranche=tranche,
        new_sl=new_sl,
        ts_epoch=time.time(),
        source="test",
    )
    await submit_proposal(r, keys, p, ttl_s=60)
    return make_plan_id(SYMBOL, action.value, epoch, tranche)


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def by_layer(audit: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {a["layer"]: (a["decision"], a["reason"]) for a in audit}


async def start(chain: Chain, r: Redis) -> None:
    sim = SimExchange(r, chain.keys)
    await sim.list_symbol(SYMBOL, step_size="0.001", min_qty="0.001")
    await sim.set_position(SYMBOL, Decimal("0.062"), ENTRY)
    await sim.set_price(SYMBOL, MARK)
    await asyncio.to_thread(chain.start)
    await asyncio.to_thread(chain.wait_ready)
    await wait_snapshot(r, chain.keys)


def test_halt_resume_and_a_stale_backlog(
    chain_factory: Callable[..., Chain], redis_url: str
) -> None:
    chain = chain_factory(COOLDOWN_S="0", PLAN_MAX_AGE_S=str(PLAN_MAX_AGE_S))
    k = chain.keys

    async def body() -> dict[str, Any]:
        r = async_client(redis_url)
        try:
            await start(chain, r)
            out: dict[str, Any] = {}
            out["halt"] = await asyncio.to_thread(ctl, chain, "halt", "--reason", "drill")
            halted = await propose(r, k, Action.PARTIAL_25, 1)
            out["halted"] = await wait_result(r, k, halted)
            out["halted_audit"] = by_layer(await audit_for(r, k, halted))
            await asyncio.to_thread(ctl, chain, "resume", "--reason", "drill over")
            # a plan from long ago, as a backlog replayed after a restart would put it
            old = plan(
                Action.PARTIAL_50,
                mode="testnet",
                tranche=9,
                created_at=time.time() - 4 * PLAN_MAX_AGE_S,
            )
            await r.xadd(k.plan_stream, old.to_fields())  # type: ignore[arg-type]
            fresh = await propose(r, k, Action.PARTIAL_25, 2)
            out["fresh"] = await wait_result(r, k, fresh)
            # each gatekeeper reads plans in stream order: the old plan was judged first
            out["old"] = await wait_result(r, k, old.plan_id)
            out["old_audit"] = by_layer(await audit_for(r, k, old.plan_id))
            out["fills"] = [f for _i, f in await r.xrange(k.sim_fills)]
            out["fresh_id"], out["halted_id"], out["old_id"] = fresh, halted, old.plan_id
            hb = json.loads(await r.get(k.heartbeat("governor")) or "{}")
            out["metrics"] = await asyncio.to_thread(metrics, hb["metrics_port"])
            return out
        finally:
            await r.aclose()

    out = asyncio.run(body())
    assert "HALTED" in out["halt"].stdout
    # halted: the governor denies, the executor blocks, no order
    assert out["halted"]["status"] == "blocked"
    assert out["halted"]["reason"] == "governor_denied"
    assert out["halted_audit"]["governor"] == ("DENY", "trading_halted")
    # resumed: the next plan goes through
    assert out["fresh"]["status"] == "filled" and out["fresh"]["filled_qty"] == "0.015"
    assert out["old_audit"]["governor"] == ("DENY", "plan_expired")
    assert out["old_audit"]["position-brain"] == ("DENY", "plan_expired")
    assert out["old"]["status"] == "blocked" and out["old"]["reason"] == "plan_expired"
    assert out["old"]["executed"] == "false" and out["old"]["client_order_id"] == ""
    # exactly one order reached the exchange: the fresh plan's
    assert [f["client_order_id"] for f in out["fills"]] == [f"pc-{out['fresh_id']}"]
    # the governor's own metrics (the port it bound, from its heartbeat)
    m = out["metrics"]
    for decision, reason in (
        ("DENY", "trading_halted"),
        ("DENY", "plan_expired"),
        ("GRANT", "testnet_auto_approve"),
    ):
        assert (
            f'governor_permit_total{{decision="{decision}",reason="{reason}",symbol="BTCUSDT"}} 1.0'
        ) in m
    assert "governor_trading_state 0.0" in m


def test_production_rate_limit_in_the_chain(
    chain_factory: Callable[..., Chain], redis_url: str, tmp_path: Path
) -> None:
    """APPLY_MODE=production, signed permits: two executions in five minutes, the third denied."""
    chain = chain_factory(APPLY_MODE="production", COOLDOWN_S="0")
    generate(tmp_path / "keys")
    chain.use_keys(tmp_path / "keys")
    k = chain.keys

    async def body() -> tuple[list[dict[str, str]], list[dict[str, Any]], int]:
        r = async_client(redis_url)
        try:
            await start(chain, r)
            results, audits = [], []
            # stop moves: they leave the position as it is, so P3.3 (snapshot and ledger)
            # allows each one and only the governor's count decides
            for tranche in (1, 2, 3):
                pid = await propose(r, k, Action.UPDATE_SL, tranche, new_sl=Decimal(100 + tranche))
                results.append(await wait_result(r, k, pid))
                audits.append(by_layer(await audit_for(r, k, pid)))
            return results, audits, await r.xlen(k.sim_fills)
        finally:
            await r.aclose()

    results, audits, fills = asyncio.run(body())
    assert [a["governor"] for a in audits] == [
        ("GRANT", "policy_ok"),
        ("GRANT", "policy_ok"),
        ("DENY", "rate_limit_5min"),
    ]
    assert [res["status"] for res in results] == ["filled", "filled", "blocked"]
    assert results[2]["reason"] == "governor_denied"
    assert fills == 0  # stop orders, no market fill
