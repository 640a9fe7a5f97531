"""STREAM_SHARDS=3 on the local three-master cluster: the slot function against the
server's CLUSTER KEYSLOT; the reference scenario unchanged; the three plan streams on three
masters; and, over symbols in every shard, the commands each master served within 2× of
each other (the hot path spreads instead of landing on one slot)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from permitchain.chain import Chain
from permitchain.contract.keys import Keys, key_slot
from tests.cluster.conftest import SLOT_RANGES, LocalCluster
from tests.cluster.test_chain_on_cluster import submit
from tests.integration.test_reference_scenario import test_reference_scenario as _reference
from tests.reliability.harness import check_invariants, entries, settle, started_chain

pytestmark = pytest.mark.slow

SHARDS = 3
CANDIDATES = [
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "BNBUSDT",
    "LTCUSDT",
    "DOTUSDT",
    "LINKUSDT",
    "AVAXUSDT",
    "TRXUSDT",
    "ATOMUSDT",
    "NEARUSDT",
    "APTUSDT",
    "ARBUSDT",
    "OPUSDT",
    "FILUSDT",
]
PLANS = 60
# The chain's unsharded keys (the audit and proposal streams, the trading state, the sim's
# config and fills) are one key each, on the master their prefix's slot picks: a random test
# prefix would move them from run to run. The spread is measured under the default prefix.
PINNED = "quantum"


def symbols_per_shard(k: Keys, per_shard: int = 2) -> list[str]:
    """The first ``per_shard`` candidates of each shard."""
    out: list[str] = []
    for shard in range(k.shards):
        out += [s for s in CANDIDATES if k.shard_of(s) == shard][:per_shard]
    assert len(out) == per_shard * k.shards
    return out


@pytest.fixture
def chain_factory(chain_factory: Callable[..., Chain]) -> Callable[..., Chain]:
    """The suite's chain, with its streams in three shards."""
    return lambda **env: chain_factory(**{"STREAM_SHARDS": str(SHARDS), **env})


# The reference scenario, unchanged, with STREAM_SHARDS=3 (the fixture above).
test_reference_scenario_sharded = _reference


def test_key_slot_is_the_servers(cluster: LocalCluster) -> None:
    k = Keys("quantum", shards=SHARDS)
    keys = [
        *k.plan_streams,
        *k.result_streams,
        *k.permit_event_streams,
        k.decisions,
        k.exec_record("0123456789abcdef"),
        "foo",
        "{a}b",
        "x{}y",
        "中文",
    ]
    c = cluster.node_clients()[0]
    try:
        for key in keys:
            assert key_slot(key) == c.execute_command("CLUSTER", "KEYSLOT", key), key
    finally:
        c.close()


def commands(cluster: LocalCluster) -> list[int]:
    out = []
    for c in cluster.node_clients():
        out.append(int(c.info("stats")["total_commands_processed"]))
        c.close()
    return out


def test_shards_spread_over_the_masters(
    chain_factory: Callable[..., Chain], r: Any, cluster: LocalCluster
) -> None:
    k = Keys(shards=SHARDS)
    for i, stream in enumerate(k.plan_streams):  # shard i in the i-th third of the slots
        lo, hi = SLOT_RANGES[i]
        assert lo <= key_slot(stream) <= hi
    symbols = symbols_per_shard(k)
    chain = started_chain(chain_factory, r, symbols, KEY_PREFIX=PINNED)
    k = chain.keys
    assert k.shards == SHARDS
    before = commands(cluster)
    for n in range(PLANS):
        submit(r, k, symbols[n % len(symbols)], n)
        time.sleep(0.05)
    deadline = time.monotonic() + 90
    while len(entries(r, k.result_streams)) < PLANS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(v == (0, 0) for v in settle(r, k).values())
    after = commands(cluster)
    violations, figures = check_invariants(r, k, symbols)
    assert violations == [], violations
    assert figures["plans"] == PLANS and figures["results"] == PLANS, figures
    # each plan stream on its own master, with its shard's plans
    holders = [cluster.keys_per_node(stream) for stream in k.plan_streams]  # SCAN per node
    assert holders == [[1, 0, 0], [0, 1, 0], [0, 0, 1]], holders
    for shard, stream in enumerate(k.plan_streams):
        got = {f["symbol"] for _i, f in r.xrange(stream)}
        assert got == {s for s in symbols if k.shard_of(s) == shard}
    # every group on every shard exists and has read everything
    for stream in (*k.plan_streams, *k.result_streams):
        want = {"governor", "p33", "executor"} if stream in k.plan_streams else {"p33-ledger"}
        assert {g["name"] for g in r.xinfo_groups(stream)} >= want
    served = [a - b for a, b in zip(after, before, strict=True)]
    print(f"\ncommands per master over {PLANS} plans: {served}; {figures}")
    assert max(served) <= 2 * min(served), served
