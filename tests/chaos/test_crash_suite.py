"""Crash suite: SIGKILL random services at random moments under a steady stream of proposals.

At least 20 kills, every service hit, each restarted at once. Then the chain settles and the
invariants are checked from Redis and the exchange: no plan executed twice, no order without
two allow permits in the audit stream, every plan terminal with exactly one result, nothing
pending, ledger equal to exchange, no order above the position. Run with the streams
unsharded and in three shards (STREAM_SHARDS; the symbols fall in all three).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from permitchain.chain import Chain
from permitchain.services import SERVICE_NAMES
from tests.reliability.harness import Load, check_invariants, seed_positions, settle

pytestmark = pytest.mark.slow

MIN_KILLS = 20


@pytest.mark.parametrize("shards", ["1", "3"], ids=["1-shard", "3-shards"])
def test_sigkill_random_services(
    chain_factory: Callable[..., Chain], r: redis.Redis, redis_url: str, shards: str
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    symbols = [f"CHAOS{i}USDT" for i in range(8)]
    chain = chain_factory(
        ALLOW_LIST_SYMBOLS=",".join(symbols),
        COOLDOWN_S="0",
        POLL_INTERVAL_S="0.5",
        PLAN_MAX_AGE_S="10",
        STREAM_SHARDS=shards,
    )
    k = chain.keys
    seed_positions(r, k, symbols)
    chain.start()
    chain.wait_ready()
    load = Load(redis_url, k, symbols, rate=25)
    load.start()
    kills: Counter[str] = Counter()
    order = list(SERVICE_NAMES)
    rng.shuffle(order)  # every service is hit in the first round, then at random
    try:
        while sum(kills.values()) < MIN_KILLS:
            victim = (
                order[sum(kills.values())]
                if sum(kills.values()) < len(order)
                else rng.choice(SERVICE_NAMES)
            )
            time.sleep(rng.uniform(0.1, 1.2))  # a random moment, not a synchronisation
            chain.kill_service(victim)
            kills[victim] += 1
            time.sleep(rng.uniform(0.0, 0.4))
            chain.start_service(victim)
    finally:
        load.stop.set()
        load.join()
    chain.wait_ready(timeout_s=60)
    groups = settle(r, k, timeout_s=120)
    violations, figures = check_invariants(r, k, symbols)
    print(
        f"\ncrash suite (seed {seed}): kills {sum(kills.values())} {dict(kills)}; "
        f"proposals {load.sent}; {figures}; violations {len(violations)}"
    )
    assert all(v == (0, 0) for v in groups.values()), groups
    assert violations == [], violations[:20]
    assert figures["executions"] > 0  # the chain did work between the kills
