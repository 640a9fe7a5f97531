"""The pieces of `status` and `explain` that need no server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from permitchain.contract.reasons import QTY_MISMATCH, SIDE_MISMATCH
from permitchain.ops.health import reconcile_verdict, service_state
from permitchain.ops.history import story
from permitchain.position_brain.checks import CheckConfig

CFG = CheckConfig()


@pytest.mark.parametrize(
    ("exchange", "ledger", "verdict"),
    [
        ("0.062", "0.002", QTY_MISMATCH),  # the reference scenario: diff 0.06 > 0.001
        ("0.062", "0.0615", "ok"),  # within max(0.001, 1 % of 0.062)
        ("10", "9.95", "ok"),  # 1 % of 10 = 0.1 ≥ 0.05
        ("10", "9.8", QTY_MISMATCH),
        ("0.5", "-0.5", SIDE_MISMATCH),
        ("0", "0.002", SIDE_MISMATCH),
        (None, "1", "no_snapshot"),
        ("1", None, "no_ledger"),
    ],
)
def test_reconcile_verdict_is_p33_check_4(
    exchange: str | None, ledger: str | None, verdict: str
) -> None:
    ex = Decimal(exchange) if exchange is not None else None
    led = Decimal(ledger) if ledger is not None else None
    assert reconcile_verdict(ex, led, CFG)[0] == verdict


def test_reference_mismatch_context() -> None:
    _v, ctx = reconcile_verdict(Decimal("0.062"), Decimal("0.002"), CFG)
    assert ctx == {"diff": "0.06", "tolerance": "0.001"}


def test_service_state() -> None:
    up = service_state('{"ts": 100.0, "version": "0.1.0", "pid": 7, "metrics_port": 8044}', 102.5)
    assert up["up"] and up["age_s"] == 2.5 and up["metrics_port"] == 8044
    assert not service_state(None, 100.0)["up"]
    assert not service_state("not json", 100.0)["up"]


def step(layer: str, decision: str, ts: float) -> dict[str, object]:
    return {
        "id": f"{int(ts * 1000)}-0",
        "ts": ts,
        "plan_id": "p",
        "symbol": "BTCUSDT",
        "layer": layer,
        "decision": decision,
        "reason": "r",
        "context": {},
    }


def test_story_puts_the_origin_first_and_consume_before_the_result() -> None:
    audit = [
        step("governor", "GRANT", 1.000),
        step("planner", "EXECUTE", 1.001),
        step("position-brain", "ALLOW", 1.002),
        step("executor", "EXECUTED", 1.010),
        step("planner", "DUPLICATE", 6.0),
    ]
    out = story(audit, {"permitted_at": "1.011", "state": "filled"})
    assert [s["layer"] for s in out] == [
        "planner",
        "governor",
        "position-brain",
        "consume",
        "executor",
        "planner",
    ]
    assert out[-1]["decision"] == "DUPLICATE"
