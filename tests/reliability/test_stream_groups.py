"""Stream consumer groups, chain-level (docs/design.md §1, §9): groups are created at ``$``, so a
chain started on streams that already hold history processes none of it; and entries left in
the pending list of a consumer that died are reclaimed (XAUTOCLAIM) by a live member of the
group and processed once.

The original system created its groups at ``0-0`` (a fresh deployment replayed every old
close plan) and never reclaimed pending entries (a consumer that died took its entries with it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis

from permitchain.apply_layer.planner import steps_for
from permitchain.apply_layer.planner_service import GROUP_PLANNER
from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import CLOSE_FRACTION, Action, Plan, PlanDecision, make_plan_id
from tests.reliability.harness import seed_positions, settle, wait_fills

pytestmark = pytest.mark.slow

SYMBOLS = ["HISTAUSDT", "HISTBUSDT", "HISTCUSDT"]


def proposal(symbol: str, tranche: int) -> dict[str, str]:
    """A valid, fresh proposal: anything that reads it would plan (and execute) a close."""
    return {
        "schema": "1",
        "proposal_id": uuid.uuid4().hex[:12],
        "symbol": symbol,
        "action": "PARTIAL_25",
        "kill_score": "0.9",
        "position_epoch": "0",
        "tranche": str(tranche),
        "ts_epoch": f"{time.time():.6f}",
        "source": "history",
        "new_sl": "",
        "r_net": "",
    }


def execute_plan(symbol: str, tranche: int) -> Plan:
    now = time.time()
    return Plan(
        plan_id=make_plan_id(symbol, Action.PARTIAL_25.value, 0, tranche),
        symbol=symbol,
        action=Action.PARTIAL_25.value,
        decision=PlanDecision.EXECUTE,
        reason_codes=("plan_ok",),
        kill_score=Decimal("0.9"),
        close_fraction=CLOSE_FRACTION[Action.PARTIAL_25],
        new_sl=None,
        steps=steps_for(Action.PARTIAL_25, None),
        mode="testnet",
        source="history",
        proposal_id="h",
        proposal_ts=now,
        created_at=now,
        expires_at=now + 30,
    )


def fresh_chain(chain_factory: Callable[..., Chain], r: redis.Redis) -> tuple[Chain, Keys]:
    chain = chain_factory(
        ALLOW_LIST_SYMBOLS=",".join(SYMBOLS), COOLDOWN_S="0", POLL_INTERVAL_S="0.5"
    )
    seed_positions(r, chain.keys, SYMBOLS)
    return chain, chain.keys


def test_groups_start_at_dollar_history_is_never_processed(
    chain_factory: Callable[..., Chain], r: redis.Redis
) -> None:
    chain, k = fresh_chain(chain_factory, r)
    # History written before any group exists: valid, fresh, executable.
    old_plans = [execute_plan(s, 100 + i) for i, s in enumerate(SYMBOLS * 5)]
    for i, s in enumerate(SYMBOLS * 5):
        r.xadd(k.proposal_stream, proposal(s, 200 + i))
    for p in old_plans:
        r.xadd(k.plan_stream, p.to_fields())
    history = {s: r.xlen(s) for s in (k.proposal_stream, k.plan_stream)}
    assert not r.exists(k.result_stream)
    chain.start()
    chain.wait_ready()
    # One new proposal after the start: it runs the whole chain, so every group was live.
    r.xadd(k.proposal_stream, proposal(SYMBOLS[0], 1))
    assert wait_fills(r, k, 0, timeout_s=30)
    groups = settle(r, k, timeout_s=30)
    results = [f for _i, f in r.xrange(k.result_stream)]
    touched = {f["plan_id"] for _i, f in r.xrange(k.decisions)}
    replayed = [p.plan_id for p in old_plans if p.plan_id in touched]
    new_plans = r.xlen(k.plan_stream) - history[k.plan_stream]
    print(
        f"\ngroups at $: history {history}; new plans {new_plans}; results {len(results)}; "
        f"fills {r.xlen(k.sim_fills)}; historic plans touched {len(replayed)}"
    )
    assert all(v == (0, 0) for v in groups.values()), groups
    assert new_plans == 1  # only the new proposal was planned
    assert len(results) == 1 and results[0]["status"] == "filled"
    assert r.xlen(k.sim_fills) == 1
    assert replayed == []  # no gatekeeper or executor decided anything about history
    for s in (k.proposal_stream, k.plan_stream):
        for g in r.xinfo_groups(s):
            assert g["last-delivered-id"] > "0-0"


def test_pending_entries_of_a_dead_consumer_are_reclaimed(
    chain_factory: Callable[..., Chain], r: redis.Redis
) -> None:
    chain, k = fresh_chain(chain_factory, r)
    # A planner on another host read three proposals and died before acknowledging them.
    dead = "deadhost:apply-layer"
    r.xgroup_create(k.proposal_stream, GROUP_PLANNER, id="$", mkstream=True)
    for i, s in enumerate(SYMBOLS):  # one each: no plan waits on another's fill
        r.xadd(k.proposal_stream, proposal(s, 10 + i))
    taken = r.xreadgroup(GROUP_PLANNER, dead, {k.proposal_stream: ">"}, count=10)
    assert len(taken[0][1]) == 3
    assert r.xpending(k.proposal_stream, GROUP_PLANNER)["pending"] == 3
    t0 = time.monotonic()
    chain.start()
    chain.wait_ready()
    # Nothing else is sent: only a reclaim can bring these proposals to the exchange.
    assert wait_fills(r, k, 2, timeout_s=30)
    reclaimed_after = time.monotonic() - t0
    groups = settle(r, k, timeout_s=30)
    consumers = {
        c["name"]: c["pending"] for c in r.xinfo_consumers(k.proposal_stream, GROUP_PLANNER)
    }
    results = [f for _i, f in r.xrange(k.result_stream)]
    logs = "".join(p.read_text() for p in chain.log_dir.glob("*.log"))
    print(
        f"\nreclaim: 3 entries pending on {dead}; all filled {reclaimed_after:.1f}s after "
        f"the start; consumers {consumers}; results {len(results)}"
    )
    assert all(v == (0, 0) for v in groups.values()), groups
    assert consumers.get(dead, 0) == 0
    assert len(results) == 3 and {f["status"] for f in results} == {"filled"}
    assert r.xlen(k.sim_fills) == 3
    assert "reclaimed" in logs
