"""The services' garbage-collector settings: thresholds, the frozen start-up heap, the pause
histogram; and that a service's entry point applies them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from permitchain.runtime import gc_tuning, service


def test_tune_and_freeze_in_a_fresh_process() -> None:
    """In a process of its own (the test process's collector is left alone): the thresholds
    are set, start-up objects are frozen, and a collection is observed in the histogram."""
    code = """
import gc
from permitchain.runtime import gc_tuning
from prometheus_client import REGISTRY
assert gc.get_threshold() == (700, 10, 10), gc.get_threshold()
gc_tuning.tune(); gc_tuning.tune()  # twice: one callback
assert gc.get_threshold() == (gc_tuning.GEN0_THRESHOLD, gc_tuning.GEN1_THRESHOLD,
                              gc_tuning.GEN2_THRESHOLD)
assert gc.callbacks.count(gc_tuning._observe) == 1
n = gc_tuning.freeze()
assert n == gc.get_freeze_count() > 1000, n
gc.collect(0)
full = REGISTRY.get_sample_value("permitchain_gc_pause_seconds_count", {"generation": "2"})
young = REGISTRY.get_sample_value("permitchain_gc_pause_seconds_count", {"generation": "0"})
assert full is not None and full >= 1 and young is not None and young >= 1, (full, young)
print("ok", n)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


def test_run_service_tunes_then_freezes_after_building_the_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    class Runner:
        name = "svc"
        stop = asyncio.Event()  # what run_service sets on a signal or the parent's death

        def install_signal_handlers(self) -> None:
            calls.append("signals")

        async def run(self) -> None:
            calls.append("run")

    async def factory() -> Any:
        calls.append("build")
        return Runner()

    monkeypatch.setattr(gc_tuning, "tune", lambda: calls.append("tune"))
    monkeypatch.setattr(gc_tuning, "freeze", lambda: calls.append("freeze") or 0)
    service.run_service(factory)
    assert calls == ["tune", "build", "signals", "freeze", "run"]
