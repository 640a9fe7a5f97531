"""``proof --canary`` from a timer: every run is a new plan (a rerun within DEDUPE_TTL passes
too), and the last run's outcome and times are exported: on the apply layer's /metrics
(read from Redis) and, with ``--metrics-file``, as a node_exporter textfile."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from permitchain.chain import Chain
from permitchain.scenario import SYMBOL
from tests.ops.test_commands import cli_json, start, wait_for

pytestmark = pytest.mark.slow


def series(text: str) -> dict[str, float]:
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("permitchain_canary_")
    }


def test_canary_every_run_is_new_and_exported(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    chain = chain_factory()
    k = chain.keys
    start(chain, redis_url, scenario=False)
    wait_for(lambda: r.exists(k.snapshot(SYMBOL)) and r.exists(k.ledger(SYMBOL)))

    for _run in range(2):  # the second within DEDUPE_TTL of the first
        proof = cli_json(chain, "proof", "--canary")
        by_name = {c["name"]: c for c in proof["checks"]}
        assert by_name["canary planner"]["ok"], by_name["canary planner"]
        assert proof["passed"], proof

    t0 = time.time()
    textfile = tmp_path / "permitchain_canary.prom"
    assert cli_json(chain, "proof", "--canary", "--metrics-file", str(textfile))["passed"]
    written = series(textfile.read_text())
    assert written["permitchain_canary_last_ok"] == 1.0
    assert written["permitchain_canary_last_run_timestamp_seconds"] >= t0
    assert written["permitchain_canary_last_success_timestamp_seconds"] >= t0
    assert written["permitchain_canary_last_duration_seconds"] > 0

    port = json.loads(str(r.get(k.heartbeat("apply-layer"))))["metrics_port"]

    def exported() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return series(resp.read().decode())

    wait_for(lambda: exported().get("permitchain_canary_last_run_timestamp_seconds", 0) >= t0)
    assert exported()["permitchain_canary_last_ok"] == 1.0
