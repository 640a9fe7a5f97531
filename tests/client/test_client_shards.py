"""permitchain-client with sharded result streams (STREAM_SHARDS): its key names are the
chain's for every shard count; it learns the count from the chain's heartbeats and refuses
services that disagree or a count it was told that the chain does not run; against a chain
of three shards it follows a plan to its result and reports a gated plan's result into the
symbol's shard."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.runtime.service import ServiceRunner
from permitchain_client import ClaimVerdict, Client, SchemaMismatch
from permitchain_client import contract as client_contract
from permitchain_client.contract import Keys as ClientKeys

from .conftest import SYMBOL, Running, wait_ledger
from .test_gate import place

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 256])
def test_result_stream_names_are_the_chains(n: int) -> None:
    ours, theirs = ClientKeys("qx", shards=n), Keys("qx", shards=n)
    assert ours.result_streams == theirs.result_streams
    for sym in SYMBOLS:
        assert ours.shard_of(sym) == theirs.shard_of(sym)
        assert ours.result_stream_for(sym) == theirs.result_stream_for(sym)


def test_stream_shards_come_from_the_heartbeats() -> None:
    runner = ServiceRunner("apply-layer", None, Keys("qx", shards=3))  # type: ignore[arg-type]
    three = runner.heartbeat_payload()
    assert json.loads(three)["stream_shards"] == 3
    assert client_contract.check_stream_shards({"apply-layer": three, "governor": None}) == 3
    # a chain whose heartbeats predate sharding: one shard
    assert client_contract.check_stream_shards({"apply-layer": json.dumps({"schema": 1})}) == 1
    two = json.dumps({"schema": 1, "stream_shards": 2})
    with pytest.raises(SchemaMismatch, match="disagree on STREAM_SHARDS"):
        client_contract.check_stream_shards({"apply-layer": three, "governor": two})
    with pytest.raises(
        SchemaMismatch, match="stream_shards=2 was given, but the chain runs STREAM_SHARDS=3"
    ):
        client_contract.check_stream_shards({"apply-layer": three}, expected=2)
    with pytest.raises(SchemaMismatch, match="declares stream_shards"):
        client_contract.check_stream_shards({"apply-layer": json.dumps({"stream_shards": 0})})


@pytest.mark.slow
def test_client_against_a_sharded_chain(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain(STREAM_SHARDS="3")
    client, gate, keys = run.client, run.client.gate, run.keys
    assert keys.shards == 3
    stream = keys.result_stream_for(SYMBOL)
    assert stream != "quantum:stream:apply.result" and stream.startswith(keys.prefix)
    # told another shard count: refused before anything is written
    wrong = Client.from_url(run.url, key_prefix=keys.prefix, stream_shards=2)
    try:
        with pytest.raises(SchemaMismatch, match="STREAM_SHARDS=3"):
            wrong.propose(SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=9)
    finally:
        wrong.close()
    assert r.xlen(keys.proposal_stream) == 0
    # a gated plan: claimed, sent by the bot, its report the one result, in the shard
    plan_id = client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=1, executor="external")
    claim = gate.claim(plan_id, timeout=20)
    assert claim.verdict is ClaimVerdict.OK and claim.qty == Decimal("0.031")
    order_id = place(run, claim.qty, claim.client_order_id)
    assert gate.report(plan_id, "filled", claim.qty, avg_price="107", order_id=order_id).accepted
    assert [f["plan_id"] for _i, f in r.xrange(stream)] == [plan_id]
    assert client.wait_result(plan_id, timeout=5).status == "filled"
    assert wait_ledger(r, keys, "0.031") == "0.031"  # P3.3 read it from the shard
    # a builtin plan (blocked or filled: P3.3's cooldown decides), followed to its one
    # result by a client that did not propose it
    second = client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=2)
    other = Client.from_url(run.url, key_prefix=keys.prefix)
    try:
        assert other.wait_result(second, timeout=20).plan_id == second
    finally:
        other.close()
    assert [f["plan_id"] for _i, f in r.xrange(stream)] == [plan_id, second]
