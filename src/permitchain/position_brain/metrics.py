"""P3.3's Prometheus metrics (served on ``METRICS_PORT``, default 8045).

The per-symbol series are plain dicts behind the custom collectors of
:mod:`permitchain.runtime.metrics`, not prometheus_client ``Counter``/``Gauge`` children:
some 3.5 kB per watched symbol for P3.3's series as children (with 7,500 symbols, ~27 MB of
the 100 MB budget), one dict entry per series here, with the same ``/metrics`` text.

Both the poller thread (:mod:`.poll_thread`) and the service's loop write them (see
:mod:`permitchain.runtime.metrics` for why that is safe).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from permitchain.runtime.metrics import LabelledCounter, SymbolGauge

SNAPSHOTS = LabelledCounter(
    "p33_snapshot_total", "Snapshot writes per symbol", ["symbol", "status"]
)
PERMITS = LabelledCounter("p33_permit_total", "P3.3 permits", ["symbol", "decision", "reason"])
POSITION_AMT = SymbolGauge("p33_position_amt", "Exchange position (signed)")
LEDGER_AMT = SymbolGauge("p33_ledger_amt", "Ledger position (signed)")
POLL_SECONDS = Gauge("p33_poll_duration_seconds", "Duration of the last snapshot poll")
#: How old the snapshot was when P3.3 judged a plan by it (every judgement that read one,
#: allow or deny): the freshness pushed updates buy, next to ``STALE_THRESHOLD_S``.
JUDGED_AGE = Histogram(
    "p33_snapshot_age_at_judgement_seconds",
    "Age of the snapshot P3.3 judged a plan by",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 20),
)


class SnapshotAge(Collector):
    """``p33_snapshot_age_sec{symbol}``: computed at scrape time from the last snapshot this
    process wrote for the symbol, so it keeps growing while the exchange does not answer."""

    def __init__(self) -> None:
        self.written_at: dict[str, float] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "p33_snapshot_age_sec", "Age of the last good snapshot", labels=["symbol"]
        )
        now = time.time()
        for sym, ts in list(self.written_at.items()):
            g.add_metric([sym], now - ts)
        yield g


SNAPSHOT_AGE = SnapshotAge()
REGISTRY.register(SNAPSHOT_AGE)
