"""Prometheus series kept in plain dicts behind custom collectors, for metrics with a series
per symbol (or per symbol and a few other labels) whose series are never removed.

A prometheus_client ``Counter``/``Gauge`` child is an object with its own lock and value
object; here a series is one dict entry (P3.3's five series per symbol: 3.65 kB as
children, 0.8 kB as dict entries). What ``/metrics`` shows is what the children showed:
the same names, types, help, labels, values, ``_created`` samples (a series' first use;
left out when prometheus_client's created series are disabled) and order. Used by the
governor (``governor_permit_total``, ``governor_results_total``), the apply layer
(``apply_plans_total``, ``apply_executions_total``) and P3.3
(:mod:`permitchain.position_brain.metrics`).

Thread safety: a counter's read-modify-write (``inc``) and the scrape's copy of it hold the
counter's lock; a gauge's ``set`` is one dict store and its scrape one ``list(items())``,
each atomic under the GIL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

import prometheus_client.metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry


def _use_created() -> bool:
    """prometheus_client's switch (``PROMETHEUS_DISABLE_CREATED_SERIES``,
    ``disable_created_metrics()``), read at scrape time as its own metrics do."""
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class LabelledCounter(Collector):
    """A counter with labels, one dict entry per label set: the value and its creation time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def ensure(self, *labels: str) -> None:
        """Create the series at 0 if it does not exist (as ``labels()`` does)."""
        if labels not in self.values:
            with self._lock:
                if labels not in self.values:
                    self.created[labels] = time.time()
                    self.values[labels] = 0.0

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._add(labels, amount)

    def inc_each(self, label_sets: Iterable[tuple[str, ...]]) -> None:
        """``inc()`` by 1 of each label set (a set may repeat), under one lock."""
        with self._lock:
            for labels in label_sets:
                self._add(labels, 1.0)

    def _add(self, labels: tuple[str, ...], amount: float) -> None:
        """The series' read-modify-write (the caller holds the lock)."""
        v = self.values.get(labels)
        if v is None:
            self.created[labels] = time.time()
            v = 0.0
        self.values[labels] = v + amount

    def value(self, *labels: str) -> float | None:
        return self.values.get(labels)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            series = [(k, v, self.created[k]) for k, v in self.values.items()]
        family, created = self._family(), _use_created()
        for labels, value, at in series:
            family.add_metric(labels, value, created=at if created else None)
        yield family


class SymbolGauge(Collector):
    """A gauge labelled by symbol alone: ``{symbol: value}``."""

    def __init__(
        self, name: str, documentation: str, registry: CollectorRegistry | None = REGISTRY
    ) -> None:
        self.name, self.documentation = name, documentation
        self.values: dict[str, float] = {}
        if registry is not None:
            registry.register(self)

    def ensure(self, symbol: str) -> None:
        """Create the series at 0 if it does not exist (as ``labels()`` does)."""
        self.values.setdefault(symbol, 0.0)

    def set(self, symbol: str, value: float) -> None:
        self.values[symbol] = float(value)  # one dict store: atomic under the GIL

    def value(self, symbol: str) -> float | None:
        return self.values.get(symbol)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=["symbol"])

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for symbol, value in list(self.values.items()):  # one C call: a copy under the GIL
            family.add_metric([symbol], value)
        yield family
