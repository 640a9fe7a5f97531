"""The notification policy, without Redis or a network: what is told, deduplicated, limited."""

from __future__ import annotations

import json

from permitchain.console.notify import NotifyPolicy


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def policy(clock: Clock, **kw: object) -> NotifyPolicy:
    base: dict[str, object] = {
        "dedupe_s": 300.0,
        "max_per_min": 20,
        "denial_burst": 3,
        "denial_window_s": 60.0,
        "plan_executed": False,
    }
    base.update(kw)
    return NotifyPolicy(clock=clock, **base)  # type: ignore[arg-type]


def audit(
    layer: str, decision: str, reason: str = "r", plan: str = "p1", **ctx: str
) -> dict[str, str]:
    return {
        "layer": layer,
        "decision": decision,
        "reason": reason,
        "plan_id": plan,
        "symbol": "BTCUSDT",
        "context": json.dumps(ctx),
        "ts": "1.0",
    }


def test_trading_state_changes_are_always_told_with_who_and_why() -> None:
    clock = Clock()
    p = policy(clock)
    [m] = p.on_audit(audit("operator", "TRADING_HALTED", "exchange incident", "", operator="bob"))
    assert m.kind == "trading_state" and "HALTED" in m.title
    assert "bob" in m.body and "exchange incident" in m.body
    clock.t += 1
    [m2] = p.on_audit(
        {**audit("operator", "TRADING_HALTED", "again", "", operator="bob"), "ts": "2.0"}
    )
    assert "again" in m2.body


def test_executed_only_when_asked() -> None:
    clock = Clock()
    assert policy(clock).on_audit(audit("executor", "EXECUTED", "ok")) == []
    [m] = policy(clock, plan_executed=True).on_audit(audit("executor", "EXECUTED", "ok"))
    assert m.kind == "executed" and "p1" in m.body


def test_a_burst_of_one_reason_is_told_once_per_dedupe_window() -> None:
    clock = Clock()
    p = policy(clock)
    out = []
    for i in range(10):
        out += p.on_audit(audit("governor", "DENY", "rate_limited", f"p{i}"))
    assert [m.subject for m in out] == ["rate_limited"]
    assert "3 plans denied" in out[0].body
    assert p.on_audit(audit("governor", "DENY", "other")) == []  # one of another reason
    clock.t += 301
    out = [m for i in range(3) for m in p.on_audit(audit("governor", "DENY", "rate_limited"))]
    assert len(out) == 1


def test_denials_spread_over_time_are_no_burst() -> None:
    clock = Clock()
    p = policy(clock)
    for _ in range(10):
        assert p.on_audit(audit("position-brain", "DENY", "stale")) == []
        clock.t += 31


def test_unhealthy_then_healthy_again() -> None:
    clock = Clock()
    p = policy(clock)
    assert p.on_health([]) == []
    [m] = p.on_health(["governor: down (no heartbeat)"])
    assert m.kind == "unhealthy" and "governor: down" in m.body
    assert p.on_health(["governor: down (no heartbeat)"]) == []  # still the same: quiet
    [m] = p.on_health(["governor: down (no heartbeat)", "apply-layer: down"])
    assert "apply-layer: down" in m.body and "governor" not in m.body
    [m] = p.on_health([])
    assert m.kind == "healthy"


def test_dead_letters_per_service_deduplicated() -> None:
    clock = Clock()
    p = policy(clock)
    fields = {"service": "governor", "stream": "quantum:stream:apply.plan", "error": "bad"}
    assert len(p.on_deadletter(fields)) == 1
    assert p.on_deadletter(fields) == []
    assert len(p.on_deadletter({**fields, "service": "apply-layer"})) == 1


def test_rate_limit_holds_back_and_counts() -> None:
    clock = Clock()
    p = policy(clock, max_per_min=2)
    sent = [m for i in range(5) for m in p.on_deadletter({"service": f"s{i}"})]
    assert len(sent) == 2
    clock.t += 61
    [m] = p.on_deadletter({"service": "late"})
    assert "3 earlier notification(s) held back" in m.body
