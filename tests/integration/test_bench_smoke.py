"""`permitchain bench --quick`: the benchmark runs end to end and every plan it sent is
verified (filled for P3.3's safe quantity, one exchange fill each). No timing assertion:
speed targets live in the benchmark's own output, not in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_quick_is_correct(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    proc = subprocess.run(
        [sys.executable, "-m", "permitchain", "bench", "--quick", "--json"],
        check=False, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    for phase in [*res["latency"].values(), res["throughput"]]:
        v = phase["verify"]
        assert v["plans"] > 0 and v["verified"] == v["plans"], v
        assert v["double_fills"] == 0 and v["failed"] == 0 and v["missing"] == 0
    assert res["floor"]["rtt_p50_ms"] > 0 and res["floor"]["critical_path_rtts"] > 0
    fl = res["floor"]
    assert fl["hop_p50_ms"] > 0  # the echo process answered
    assert fl["floor_with_hops_ms"] > fl["floor_ms"]
    assert set(res["footprint"]["rss_mb"]) == {"apply-layer", "governor", "position-brain"}
