"""The /metrics text of a set of metrics, recorded the same way through two implementations:
for tests that a change of implementation leaves the text byte for byte as it was
(with the ``created`` fixture of ``conftest.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from permitchain.runtime.metrics import LabelledCounter

SYMBOLS = ["BTCUSDT", "ETHUSDT", 'ODD"\\SYM']

# registers the metrics on the registry; returns what records one symbol's series
Make = Callable[[CollectorRegistry], Callable[[str], None]]


def _scrape(make: Make, symbols: Sequence[str]) -> tuple[bytes, bytes]:
    reg = CollectorRegistry()
    record = make(reg)
    empty = generate_latest(reg)  # the families before any series
    for sym in symbols:
        record(sym)
    return empty, generate_latest(reg) + openmetrics_latest(reg)


def text_as_before(
    monkeypatch: pytest.MonkeyPatch, before: Make, after: Make, symbols: Sequence[str] = SYMBOLS
) -> str:
    """Check that ``after`` writes what ``before`` wrote, with no series and with ``symbols``
    recorded, in the Prometheus and the OpenMetrics text, with the same creation times.
    Returns the text after recording (Prometheus, then OpenMetrics)."""
    texts = []
    for make in (before, after):
        clock = iter(1_700_000_000.0 + i / 8 for i in range(10_000))
        monkeypatch.setattr(time, "time", lambda clock=clock: next(clock))
        texts.append(_scrape(make, symbols))
    assert texts[1] == texts[0]
    return texts[1][1].decode()


#: (name, help, label names) of a counter as prometheus_client defined it
CounterDef = tuple[str, str, list[str]]
#: one increment of one symbol's series: (which counter, its labels after the symbol)
Inc = tuple[int, tuple[str, ...]]


def counters_before_and_after(
    before: Sequence[CounterDef], after: Sequence[LabelledCounter], incs: Sequence[Inc]
) -> tuple[Make, Make]:
    """For :func:`text_as_before`: ``before`` as prometheus_client ``Counter`` children, and the
    services' own ``LabelledCounter`` definitions ``after`` (rebuilt on the scrape's registry),
    both recording ``incs`` for each symbol."""

    def reference(reg: CollectorRegistry) -> Callable[[str], None]:
        counters = [Counter(*args, registry=reg) for args in before]

        def record(sym: str) -> None:
            for i, labels in incs:
                counters[i].labels(sym, *labels).inc()

        return record

    def new(reg: CollectorRegistry) -> Callable[[str], None]:
        counters = [
            LabelledCounter(c.name, c.documentation, c.labelnames, registry=reg) for c in after
        ]

        def record(sym: str) -> None:
            for i, labels in incs:
                counters[i].inc(sym, *labels)

        return record

    return reference, new
