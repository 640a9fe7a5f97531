"""P3.3's per-symbol series as plain dicts: /metrics says exactly what prometheus_client's
Counter and Gauge children said, in the same order, ``_created`` samples included."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from permitchain.position_brain.metrics import LEDGER_AMT, PERMITS, POSITION_AMT, SNAPSHOTS
from permitchain.runtime.metrics import LabelledCounter, SymbolGauge
from tests.metrics_text import text_as_before


def _reference(reg: CollectorRegistry) -> Callable[[str], None]:
    """The metrics as they were: prometheus_client children, used as the poller used them."""
    snaps = Counter(
        "p33_snapshot_total", "Snapshot writes per symbol", ["symbol", "status"], registry=reg
    )
    permits = Counter(
        "p33_permit_total", "P3.3 permits", ["symbol", "decision", "reason"], registry=reg
    )
    pos = Gauge("p33_position_amt", "Exchange position (signed)", ["symbol"], registry=reg)
    led = Gauge("p33_ledger_amt", "Ledger position (signed)", ["symbol"], registry=reg)

    def record(sym: str) -> None:
        snaps.labels(sym, "error").inc()
        ok, _flat = snaps.labels(sym, "ok"), snaps.labels(sym, "flat")
        p, lg = pos.labels(sym), led.labels(sym)
        ok.inc()
        ok.inc()
        p.set(-0.062)
        lg.set(1e-9)
        permits.labels(sym, "ALLOW", "ok").inc()
        permits.labels(sym, "DENY", "cooldown_in_flight").inc()
        permits.labels(sym, "DENY", "cooldown_in_flight").inc()

    return record


def _new(reg: CollectorRegistry) -> Callable[[str], None]:
    snaps = LabelledCounter(
        "p33_snapshot_total", "Snapshot writes per symbol", ["symbol", "status"], registry=reg
    )
    permits = LabelledCounter(
        "p33_permit_total", "P3.3 permits", ["symbol", "decision", "reason"], registry=reg
    )
    pos = SymbolGauge("p33_position_amt", "Exchange position (signed)", registry=reg)
    led = SymbolGauge("p33_ledger_amt", "Ledger position (signed)", registry=reg)

    def record(sym: str) -> None:
        snaps.inc(sym, "error")
        snaps.ensure(sym, "ok")
        snaps.ensure(sym, "flat")
        pos.ensure(sym)
        led.ensure(sym)
        snaps.inc(sym, "ok")
        snaps.inc(sym, "ok")
        pos.set(sym, -0.062)
        led.set(sym, 1e-9)
        permits.inc(sym, "ALLOW", "ok")
        permits.inc(sym, "DENY", "cooldown_in_flight")
        permits.inc(sym, "DENY", "cooldown_in_flight")

    return record


def test_metrics_text_is_what_prometheus_client_children_wrote(
    monkeypatch: pytest.MonkeyPatch, created: bool
) -> None:
    text = text_as_before(monkeypatch, _reference, _new)
    assert (
        'p33_snapshot_total{status="flat",symbol="BTCUSDT"} 0.0' in text
        and 'p33_permit_total{decision="DENY",reason="cooldown_in_flight",symbol="ETHUSDT"} 2.0'
        in text
    )
    assert ("p33_snapshot_created{" in text) is created


def test_counters_increase_and_gauges_set_on_the_registry() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    sym = "METRICSTESTUSDT"
    assert sample("p33_snapshot_total", symbol=sym, status="ok") is None
    SNAPSHOTS.inc(sym, "ok")
    SNAPSHOTS.inc(sym, "ok")
    PERMITS.inc(sym, "DENY", "no_position")
    POSITION_AMT.set(sym, -1.5)
    LEDGER_AMT.set(sym, 2.25)
    assert sample("p33_snapshot_total", symbol=sym, status="ok") == 2.0
    assert sample("p33_snapshot_created", symbol=sym, status="ok") is not None
    assert sample("p33_permit_total", symbol=sym, decision="DENY", reason="no_position") == 1.0
    assert sample("p33_position_amt", symbol=sym) == -1.5
    assert sample("p33_ledger_amt", symbol=sym) == 2.25
    LEDGER_AMT.set(sym, 0.0)
    assert sample("p33_ledger_amt", symbol=sym) == 0.0


def test_increments_from_two_threads_are_all_counted() -> None:
    c = LabelledCounter("t_threads_total", "t", ["symbol"], registry=None)
    n = 20_000

    def work(sym: str) -> None:
        for _ in range(n):
            c.inc(sym)
            c.inc("SHARED")

    threads = [threading.Thread(target=work, args=(s,)) for s in ("A", "B")]
    seen: list[Any] = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # scrapes while both threads write
        seen.append(list(c.collect()))
    for t in threads:
        t.join()
    assert c.value("A") == c.value("B") == n and c.value("SHARED") == 2 * n
