"""The apply layer's per-symbol counters as dict-backed collectors: /metrics says exactly
what their prometheus_client ``Counter`` children said, in the same order, ``_created``
samples included."""

from __future__ import annotations

import pytest

from permitchain.apply_layer.exec_store import EXEC_STATUS
from permitchain.apply_layer.planner_service import PLANS
from tests.metrics_text import counters_before_and_after, text_as_before

# the counters as they were defined, and the increments of one symbol: (counter, labels)
BEFORE = [
    ("apply_plans_total", "Plans decided by the planner", ["symbol", "decision", "reason"]),
    (
        "apply_executions_total",
        "Results written by the executor (one per plan)",
        ["symbol", "status", "reason"],
    ),
]
INCS = [
    (0, ("EXECUTE", "kill_score_close")),
    (1, ("filled", "ok")),
    (0, ("SKIP", "hold_action")),
    (0, ("EXECUTE", "kill_score_close")),
    (1, ("blocked", "p33_denied")),
    (1, ("filled", "ok")),
    (0, ("DUPLICATE", "duplicate_plan")),
]


def test_metrics_text_is_what_prometheus_client_children_wrote(
    monkeypatch: pytest.MonkeyPatch, created: bool
) -> None:
    text = text_as_before(
        monkeypatch, *counters_before_and_after(BEFORE, [PLANS, EXEC_STATUS], INCS)
    )
    assert (
        'apply_plans_total{decision="EXECUTE",reason="kill_score_close",symbol="ETHUSDT"} 2.0'
        in text
        and 'apply_executions_total{reason="ok",status="filled",symbol="BTCUSDT"} 2.0' in text
        and "# TYPE apply_executions counter" in text
    )
    assert ("apply_plans_created{" in text) is created
