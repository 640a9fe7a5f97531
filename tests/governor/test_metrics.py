"""The governor's counters as dict-backed collectors: /metrics says exactly what its
prometheus_client ``Counter`` children said (looked up once per label set, then ``inc()``),
in the same order, ``_created`` samples included."""

from __future__ import annotations

import pytest

from permitchain.governor.service import PERMITS, SETTLED
from tests.metrics_text import counters_before_and_after, text_as_before

# the counters as they were defined, and the increments of one symbol: (counter, labels)
BEFORE = [
    ("governor_permit_total", "Governor permits", ["symbol", "decision", "reason"]),
    ("governor_results_total", "Results settled", ["symbol", "settlement"]),
]
INCS = [
    (0, ("DENY", "rate_limit_5min")),
    (0, ("GRANT", "testnet_auto_approve")),
    (1, ("confirm",)),
    (0, ("DENY", "rate_limit_5min")),
    (1, ("release",)),
    (1, ("confirm",)),
    (0, ("DENY", "trading_halted")),
]


def test_metrics_text_is_what_prometheus_client_children_wrote(
    monkeypatch: pytest.MonkeyPatch, created: bool
) -> None:
    text = text_as_before(monkeypatch, *counters_before_and_after(BEFORE, [PERMITS, SETTLED], INCS))
    assert (
        'governor_permit_total{decision="DENY",reason="rate_limit_5min",symbol="ETHUSDT"} 2.0'
        in text
        and 'governor_results_total{settlement="confirm",symbol="BTCUSDT"} 2.0' in text
        and "# TYPE governor_results counter" in text
    )
    assert ("governor_permit_created{" in text) is created
