"""The chain, services as separate processes, on a local three-master Redis Cluster
(``REDIS_URL=redis+cluster://…``): the reference scenario unchanged, and plans over several
symbols whose keys land on all three masters, each executed once with one result."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from tests.cluster.conftest import LocalCluster
from tests.integration.test_reference_scenario import test_reference_scenario as _reference
from tests.reliability.harness import check_invariants, settle, started_chain

pytestmark = pytest.mark.slow

# The single-node test, collected here with this directory's fixtures: the cluster's URL.
test_reference_scenario_on_cluster = _reference

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
PLANS = 20


def submit(r: Any, k: Keys, symbol: str, tranche: int) -> None:
    r.xadd(
        k.proposal_stream,
        {
            "schema": "1",
            "proposal_id": uuid.uuid4().hex[:12],
            "symbol": symbol,
            "action": "PARTIAL_25",
            "kill_score": "0.9",
            "position_epoch": "0",
            "tranche": str(tranche),
            "ts_epoch": f"{time.time():.6f}",
            "source": "cluster-test",
            "new_sl": "",
            "r_net": "",
        },
    )


def results_per_plan(r: Any, k: Keys) -> Counter[str]:
    return Counter(f["plan_id"] for _i, f in r.xrange(k.result_stream))


def test_plans_over_all_masters(
    chain_factory: Callable[..., Chain], r: Any, cluster: LocalCluster
) -> None:
    chain = started_chain(chain_factory, r, SYMBOLS)
    k = chain.keys
    for n in range(PLANS):
        submit(r, k, SYMBOLS[n % len(SYMBOLS)], n)
        time.sleep(0.05)
    deadline = time.monotonic() + 60
    while sum(results_per_plan(r, k).values()) < PLANS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(v == (0, 0) for v in settle(r, k).values())
    violations, figures = check_invariants(r, k, SYMBOLS)
    assert violations == [], violations
    assert figures["plans"] == PLANS and figures["results"] == PLANS
    assert figures["executions"] >= len(SYMBOLS), figures  # at least one fill per symbol
    per_node = cluster.keys_per_node(f"{k.prefix}:exec:*")
    assert sum(per_node) == PLANS and all(n > 0 for n in per_node), per_node
    print(f"\nexec records per master: {per_node}; {figures}")

    # A duplicate plan-stream entry (a planner that died between its XADD and marking the
    # dedupe key adds the plan again): no second order, no second result, no second apply.
    executed = [f for _i, f in r.xrange(k.plan_stream) if f.get("decision") == "EXECUTE"][:5]
    fills_before = r.xlen(k.sim_fills)
    for f in executed:
        r.xadd(k.plan_stream, f)
    time.sleep(1.0)
    settle(r, k)
    assert r.xlen(k.sim_fills) == fills_before
    assert set(results_per_plan(r, k).values()) == {1}
    violations, _ = check_invariants(r, k, SYMBOLS)
    assert violations == [], violations
