"""`permitchain bench --quick`: the benchmark runs end to end and every plan it sent is
verified (filled for P3.3's safe quantity, one exchange fill each). No timing assertion:
speed targets live in the benchmark's own output, not in tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from permitchain.bench.load import Load, Sample, verify
from permitchain.bench.runner import clock_offset
from permitchain.contract.keys import Keys

pytestmark = pytest.mark.slow


def test_bench_quick_is_correct(redis_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url}
    proc = subprocess.run(
        [sys.executable, "-m", "permitchain", "bench", "--quick", "--json"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    # the signing cost of both schemes, measured in the same run (figures, not asserted)
    assert {"ed25519", "hmac", "extra_ms_per_plan", "within_target"} <= set(res["signing"])
    for phase in [*res["latency"].values(), res["throughput"]]:
        v = phase["verify"]
        assert v["plans"] > 0 and v["verified"] == v["plans"], v
        assert v["double_fills"] == 0 and v["failed"] == 0 and v["missing"] == 0
    for lat in res["latency"].values():
        # every plan's moment on the result stream was read, and it came before its reader
        assert lat["n"] == lat["verify"]["plans"] == lat["to_reader"]["n"], lat
        assert 0 < lat["p50_ms"] <= lat["to_reader"]["p50_ms"], lat
        assert lat["max_ms"] <= lat["to_reader"]["max_ms"], lat
    assert res["floor"]["rtt_p50_ms"] > 0 and res["floor"]["critical_path_rtts"] > 0
    fl = res["floor"]
    assert fl["hop_p50_ms"] > 0  # the echo process answered
    assert fl["floor_with_hops_ms"] > fl["floor_ms"]
    assert set(res["footprint"]["rss_mb"]) == {"apply-layer", "governor", "position-brain"}
    for phase in [*res["latency"].values(), res["throughput"]]:
        cpu = phase["cpu_ms_per_plan"]  # every process that shares the machine, per plan
        assert {"apply-layer", "governor", "position-brain", "bench"} <= set(cpu), cpu
        assert cpu["apply-layer"] > 0 and cpu["total"] > cpu["apply-layer"], cpu
        switches = phase["ctx_switches_per_plan"]  # each service woke for its plans
        assert all(switches[s] > 0 for s in ("apply-layer", "governor", "position-brain"))
        assert switches["total"] > switches["apply-layer"], switches
        # Redis's time by command: every plan runs its scripts (publish, consume, submit, the
        # sim's order, the result, P3.3's ledger), costliest first
        by_cmd = phase["redis_per_plan"]
        assert by_cmd["evalsha"]["calls"] >= 5 and by_cmd["evalsha"]["us"] > 0, by_cmd
        assert by_cmd["xadd"]["calls"] >= 1, by_cmd
        costs = [v["us"] for v in by_cmd.values()]
        assert costs == sorted(costs, reverse=True), by_cmd


def test_verify_judges_by_the_exchange_order_record(arun: Any, keys: Keys) -> None:
    """A plan counts as verified only when its result and the exchange's order record agree;
    a capped fill stream (a long run) does not make good plans fail."""
    rows = {"good": "0.5", "short": "0.4", "none": None}

    async def body(r: Any) -> dict[str, Any]:
        samples = []
        for name, order_qty in rows.items():
            coid = f"pc-{name}"
            s = Sample(
                name,
                "BENCHUSDT",
                time.time(),
                done_at=time.time(),
                result={
                    "status": "filled",
                    "executed": "true",
                    "filled_qty": "0.5",
                    "requested_qty": "0.5",
                    "client_order_id": coid,
                },
            )
            samples.append(s)
            if order_qty is not None:
                await r.hset(
                    keys.sim_order("BENCHUSDT", coid),
                    mapping={"status": "FILLED", "filled_qty": order_qty},
                )
        samples.append(Sample("late", "BENCHUSDT", time.time()))  # no result yet
        return await verify(r, keys, samples)

    v = arun(body)
    assert (v["verified"], v["failed"], v["missing"]) == (1, 2, 1)
    assert sorted(x.split(":")[0] for x in v["failures_sample"]) == ["none", "short"]


def test_orders_are_read_during_the_run(arun: Any, keys: Keys) -> None:
    """The order record is read soon after the result (the exchange keeps it only
    EXEC_RECORD_TTL_S): a plan stays verified when its order has expired by the end."""

    async def body(r: Any) -> dict[str, Any]:
        load = Load(r, keys, ["BENCHUSDT"], run_id=1)
        s = Sample(
            "early",
            "BENCHUSDT",
            time.time(),
            done_at=time.time(),
            result={
                "status": "filled",
                "executed": "true",
                "filled_qty": "0.5",
                "requested_qty": "0.5",
                "client_order_id": "pc-early",
            },
        )
        load.unchecked.append(s)
        key = keys.sim_order("BENCHUSDT", "pc-early")
        await r.hset(key, mapping={"status": "FILLED", "filled_qty": "0.5"})
        await r.hset(
            keys.exec_record("early"),
            mapping={"state": "filled", "updated_at": "1700000000.250000"},
        )
        stop = asyncio.Event()
        stop.set()  # one pass, then return
        await load.check_orders(stop)
        assert load.unchecked == [] and s.order is not None
        assert s.on_stream_at == 1700000000.25  # when its result went onto the stream
        await r.delete(key)  # expired before the end of the run
        return await verify(r, keys, [s])

    v = arun(body)
    assert (v["verified"], v["failed"]) == (1, 0)


def test_bench_refuses_a_retention_below_the_floor() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "permitchain", "bench", "--exec-record-ttl", "100"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--exec-record-ttl" in proc.stderr and "EXEC_RECORD_TTL_S" in proc.stderr


def test_clock_offset_of_a_local_server_is_near_zero(arun: Any) -> None:
    """The server's clock against the bench's (same host): the offset is small, so a result's
    server-side moment and the bench's send time can be subtracted."""

    async def body(r: Any) -> float:
        return await clock_offset(r, n=20)

    assert abs(arun(body)) < 0.05
