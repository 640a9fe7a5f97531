"""`status` with STREAM_SHARDS: a service whose heartbeat declares another shard count than
the command's settings is a problem naming both (they would read and write different
streams); each shard's stream and groups are listed on their own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from permitchain.contract.keys import GROUP_GOVERNOR, Keys
from permitchain.contract.settings import Settings
from permitchain.ops.health import gather


def beat(r: redis.Redis, k: Keys, service: str, **extra: object) -> None:
    r.set(k.heartbeat(service), json.dumps({"ts": time.time(), "version": "0", **extra}))


def test_a_service_with_another_shard_count_is_a_problem(
    r: redis.Redis, prefix: str, settings: Settings, arun: Callable[..., Any]
) -> None:
    k = Keys(prefix, shards=3)
    beat(r, k, "governor", stream_shards=3)
    beat(r, k, "position-brain", stream_shards=1)
    beat(r, k, "apply-layer")  # a heartbeat from before sharding: one shard
    r.xgroup_create(k.plan_stream_shard(1), GROUP_GOVERNOR, id="$", mkstream=True)
    r.xadd(k.plan_stream_shard(1), {"plan_id": "x"})
    h = arun(lambda ar: gather(ar, k, settings))
    mismatched = {p.subject: str(p) for p in h.problems if p.kind == "mismatch"}
    assert set(mismatched) == {"position-brain", "apply-layer"}, h.problems
    assert "runs STREAM_SHARDS=1, this command 3" in mismatched["position-brain"]
    assert h.streams["plan_stream[1]"] == 1 and h.streams["plan_stream[0]"] == 0
    assert "plan_stream" not in h.streams
    governor = {g["stream"]: g for g in h.groups if g["group"] == GROUP_GOVERNOR}
    assert governor["plan_stream[1]"]["exists"] and governor["plan_stream[1]"]["lag"] == 1
    assert not governor["plan_stream[0]"]["exists"]
    problems = [str(p) for p in h.problems]
    assert "governor: consumer group governor on plan_stream[0] missing" in problems
    # one shard: the names and the output are the unsharded ones, no mismatch for old beats
    h1 = arun(lambda ar: gather(ar, Keys(prefix), settings))
    assert "plan_stream" in h1.streams and not [
        p for p in h1.problems if p.kind == "mismatch" and p.subject == "apply-layer"
    ]
