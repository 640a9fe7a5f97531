"""STREAM_SHARDS=3 on one server, services as separate processes: the reference scenario
unchanged; plans over symbols of every shard, each in its symbol's plan stream, executed
once with one result in its symbol's result stream and the ledger equal to the exchange;
``status`` counting every shard; and two instances splitting the shards between them
(STREAM_SHARDS_OWNED), each reading only its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.settings import load_settings
from permitchain.ops.health import gather
from tests.cluster.test_chain_on_cluster import submit
from tests.integration.test_reference_scenario import test_reference_scenario as _reference
from tests.reliability.harness import check_invariants, entries, settle, started_chain
from tests.reliability.test_scale_out import HOST2, second_host  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

SHARDS = 3
#: two symbols in each of the three shards (crc32 % 3: 0, 0, 1, 1, 2, 2)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "XRPUSDT", "ARBUSDT", "SOLUSDT", "ADAUSDT"]
PLANS = 30


@pytest.fixture
def chain_factory(chain_factory: Callable[..., Chain]) -> Callable[..., Chain]:
    """The suite's chain, with its streams in three shards."""
    return lambda **env: chain_factory(**{"STREAM_SHARDS": str(SHARDS), **env})


# The reference scenario, unchanged, with STREAM_SHARDS=3 (the fixture above).
test_reference_scenario_sharded = _reference


def run_plans(r: redis.Redis, k: Keys, n: int = PLANS) -> None:
    for i in range(n):
        submit(r, k, SYMBOLS[i % len(SYMBOLS)], i)
    deadline = time.monotonic() + 60
    while len(entries(r, k.result_streams)) < n and time.monotonic() < deadline:
        time.sleep(0.1)


def test_symbols_cover_the_shards() -> None:
    k = Keys(shards=SHARDS)
    assert [k.shard_of(s) for s in SYMBOLS] == [0, 0, 1, 1, 2, 2]


def test_chain_over_three_shards(
    chain_factory: Callable[..., Chain], r: redis.Redis, redis_url: str, arun: Callable[..., Any]
) -> None:
    chain = started_chain(chain_factory, r, SYMBOLS)
    k = chain.keys
    assert k.shards == SHARDS and not r.exists("quantum:stream:apply.plan")
    run_plans(r, k)
    assert all(v == (0, 0) for v in settle(r, k).values())
    violations, figures = check_invariants(r, k, SYMBOLS)  # incl. ledger == exchange
    assert violations == [], violations
    assert figures["plans"] == PLANS and figures["results"] == PLANS, figures
    assert figures["executions"] >= len(SYMBOLS), figures
    for shard in range(SHARDS):
        mine = {s for s in SYMBOLS if k.shard_of(s) == shard}
        plans = [f for _i, f in r.xrange(k.plan_stream_shard(shard))]
        results = [f for _i, f in r.xrange(k.result_stream_shard(shard))]
        events = [f for _i, f in r.xrange(k.permit_event_stream_shard(shard))]
        assert plans and {f["symbol"] for f in plans} == mine
        assert results and {f["symbol"] for f in results} == mine
        assert {f["plan_id"] for f in plans} == {f["plan_id"] for f in results}
        assert {f["plan_id"] for f in events if f["plan_id"]} == {f["plan_id"] for f in plans}
    # status reads every shard: each group on each shard read everything, no problem
    settings = load_settings(
        {"REDIS_URL": redis_url, "KEY_PREFIX": k.prefix, "STREAM_SHARDS": str(SHARDS)}, env_file=()
    )
    h = arun(lambda ar: gather(ar, k, settings))
    assert (
        h.streams["plan_stream[0]"] + h.streams["plan_stream[1]"] + h.streams["plan_stream[2]"]
        == PLANS
    )
    groups = {(g["stream"], g["group"]) for g in h.groups if g["exists"]}
    for shard in range(SHARDS):
        for group in ("governor", "p33", "executor"):
            assert (f"plan_stream[{shard}]", group) in groups
        assert (f"result_stream[{shard}]", "p33-ledger") in groups
    assert not [p for p in h.problems if p.kind == "group"], h.problems


def hosts(r: redis.Redis, stream: str, group: str) -> set[str]:
    """The hosts of a group's consumers (consumer names are host:service)."""
    if not r.exists(stream) or group not in {g["name"] for g in r.xinfo_groups(stream)}:
        return set()
    return {c["name"].split(":")[0] for c in r.xinfo_consumers(stream, group)}


def test_owned_shards_split_between_instances(
    chain_factory: Callable[..., Chain],
    r: redis.Redis,
    second_host: Callable[[Chain, str], Any],  # noqa: F811 - the fixture imported above
) -> None:
    chain = started_chain(chain_factory, r, SYMBOLS, STREAM_SHARDS_OWNED="0,1")
    k = chain.keys
    for service in ("governor", "position-brain", "apply-layer"):  # shard 2 "on another host"
        own = chain.service_env.get(service, {})
        chain.service_env[service] = {**own, "STREAM_SHARDS_OWNED": "2"}
        second_host(chain, service)
        chain.service_env[service] = own
    groups = ("governor", "p33", "executor")
    deadline = time.monotonic() + 90  # until the second instances read shard 2's groups
    while not all(hosts(r, k.plan_stream_shard(2), g) for g in groups):
        assert time.monotonic() < deadline, "the second instances never joined shard 2"
        time.sleep(0.1)
    run_plans(r, k)
    assert all(v == (0, 0) for v in settle(r, k).values())
    violations, figures = check_invariants(r, k, SYMBOLS)
    assert violations == [], violations
    assert figures["plans"] == PLANS and figures["results"] == PLANS, figures
    for shard in range(SHARDS):
        for group in groups:
            readers = hosts(r, k.plan_stream_shard(shard), group)
            assert len(readers) == 1 and (HOST2 in readers) == (shard == 2), (shard, readers)
        readers = hosts(r, k.result_stream_shard(shard), "p33-ledger")
        assert len(readers) == 1 and (HOST2 in readers) == (shard == 2), (shard, readers)
