"""The six P3.3 checks, one boundary at a time (pure: no Redis, clock injected)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from permitchain.contract.models import Action
from permitchain.contract.snapshot import Ledger, Snapshot
from permitchain.exchange.base import closing_side
from permitchain.position_brain.checks import (
    CheckConfig,
    P33Decision,
    PlanView,
    evaluate,
    safe_close_qty,
)

NOW = 1_700_000_000.0
CFG = CheckConfig()  # the defaults of docs/design.md §6: 10 s, 0.001, 1 %, 15 s, 30 s
D = Decimal


def judge(
    amt: str = "0.062",
    *,
    ledger: str | None = None,
    action: str = "PARTIAL_75",
    age_s: float = 1.0,
    last_order_s: float | None = None,
    step: str = "0.001",
    min_qty: str = "0.001",
    plan_age_s: float = 0.0,
    snapshot: bool = True,
    **kw: Any,
) -> P33Decision:
    snap = (
        Snapshot(position_amt=D(amt), ts_epoch=NOW - age_s, step_size=D(step), min_qty=D(min_qty))
        if snapshot
        else None
    )
    led = Ledger(
        amt=D(ledger if ledger is not None else amt),
        last_order_time_epoch=None if last_order_s is None else NOW - last_order_s,
    )
    view = PlanView(action=action, created_at=NOW - plan_age_s, **kw)
    return evaluate(plan=view, snapshot=snap, ledger=led, cfg=CFG, now=NOW)


# -- the plan itself -------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["PARTIAL_33", "CLOSE_ALL", "", "partial_25", "HOLD"])
def test_unknown_actions_are_refused(action: str) -> None:
    d = judge(action=action)
    assert (d.allow, d.reason, d.context) == (False, "unknown_action", {"action": action})


def test_a_close_fraction_that_disagrees_with_the_action_is_refused() -> None:
    d = judge(action="PARTIAL_25", close_fraction=D(1))
    assert (d.allow, d.reason) == (False, "invalid_plan")
    assert d.context["expected_close_fraction"] == "0.25"


@pytest.mark.parametrize(("age", "allow"), [(29.9, True), (30.0, True), (30.1, False)])
def test_plan_max_age(age: float, allow: bool) -> None:
    d = judge(plan_age_s=age)
    assert d.allow is allow
    if not allow:
        assert d.reason == "plan_expired" and d.context["max_age_s"] == 30.0


def test_a_plan_past_its_expiry_is_refused() -> None:
    assert judge(expires_at=NOW - 0.001).reason == "plan_expired"


# -- 1. snapshot -----------------------------------------------------------------------------
def test_no_snapshot() -> None:
    assert judge(snapshot=False).reason == "no_exchange_snapshot"


@pytest.mark.parametrize(("age", "allow"), [(9.9, True), (10.0, True), (10.1, False)])
def test_snapshot_age_boundary(age: float, allow: bool) -> None:
    d = judge(age_s=age)
    assert d.allow is allow
    if not allow:
        assert d.reason == "stale_exchange_state"
        assert d.context == {"snapshot_age_sec": "10.1", "threshold_s": 10.0}


def test_a_snapshot_from_the_future_is_stale_too() -> None:
    assert judge(age_s=-10.1).reason == "stale_exchange_state"
    assert judge(age_s=-0.5).allow


# -- 2. a position ---------------------------------------------------------------------------
@pytest.mark.parametrize("amt", ["0", "0.0009", "-0.0009"])
def test_no_position(amt: str) -> None:
    assert judge(amt, action="FULL_CLOSE_PROPOSED").reason == "no_position"


def test_exactly_min_qty_is_a_position() -> None:
    d = judge("0.001", action="FULL_CLOSE_PROPOSED")
    assert d.allow and d.safe_close_qty == D("0.001")


# -- 3. side ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("ex", "led"), [("0.062", "-0.062"), ("-0.062", "0.062"), ("0.062", "0")])
def test_side_mismatch(ex: str, led: str) -> None:
    d = judge(ex, ledger=led)
    assert d.reason == "reconcile_required_side_mismatch"
    assert {d.context["exchange_side"], d.context["ledger_side"]} <= {"LONG", "SHORT", "NONE"}


# -- 4. quantity within tolerance ------------------------------------------------------------
@pytest.mark.parametrize(
    ("ex", "led", "allow"),
    [
        ("0.062", "0.061", True),  # diff 0.001 = POSITION_TOLERANCE
        ("0.062", "0.063", True),
        ("0.062", "0.060", False),  # one step over
        ("10", "9.9", True),  # diff 0.1 = 1 % of 10
        ("10", "9.899", False),  # one step over
        ("-10", "-9.9", True),  # shorts: the same on the negative side
        ("-10", "-10.1", True),
        ("-10", "-9.899", False),
        ("-10", "-10.101", False),
    ],
)
def test_qty_tolerance_boundary(ex: str, led: str, allow: bool) -> None:
    d = judge(ex, ledger=led)
    assert d.allow is allow, d
    if not allow:
        assert d.reason == "reconcile_required_qty_mismatch"


def test_reference_scenario_mismatch_context() -> None:
    d = judge("0.062", ledger="0.002")
    assert d.reason == "reconcile_required_qty_mismatch"
    assert d.context == {
        "exchange_amt": "0.062",
        "ledger_amt": "0.002",
        "diff": "0.06",
        "tolerance": "0.001",
    }


# -- 5. cooldown -----------------------------------------------------------------------------
@pytest.mark.parametrize(("since", "allow"), [(14.9, False), (15.0, True), (15.1, True)])
def test_cooldown_boundary(since: float, allow: bool) -> None:
    d = judge(last_order_s=since)
    assert d.allow is allow
    if not allow:
        assert d.reason == "cooldown_in_flight" and d.context["since_last_order_s"] == 14.9


def test_another_plan_in_flight_is_a_cooldown() -> None:
    snap = Snapshot(D("0.062"), NOW, D("0.001"), D("0.001"))
    d = evaluate(
        plan=PlanView("PARTIAL_50", NOW),
        snapshot=snap,
        ledger=None,
        cfg=CFG,
        now=NOW,
        in_flight_plan="aaaaaaaaaaaaaaaa",
    )
    assert d.reason == "cooldown_in_flight" and d.context["in_flight_plan"] == "aaaaaaaaaaaaaaaa"


def test_checks_run_in_order_first_failure_decides() -> None:
    # stale, side mismatch and cooldown at once: stale decides
    assert judge(age_s=11, ledger="-0.062", last_order_s=1).reason == "stale_exchange_state"
    # qty mismatch and cooldown: the mismatch decides (check 4 before 5)
    assert judge(ledger="0.002", last_order_s=1).reason == "reconcile_required_qty_mismatch"


# -- 6. safe close quantity ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "qty"),
    [
        ("PARTIAL_25", "0.025"),
        ("PARTIAL_50", "0.05"),
        ("PARTIAL_75", "0.075"),
        ("FULL_CLOSE_PROPOSED", "0.1"),
        ("UPDATE_SL", "0.1"),
    ],
)
def test_every_action_closes_its_exact_fraction(action: str, qty: str) -> None:
    d = judge("0.1", action=action)
    assert d.allow and d.safe_close_qty == D(qty)


def test_rounds_0_0465_down_to_0_046() -> None:
    d = judge("0.062", action="PARTIAL_75")
    assert d.allow and d.safe_close_qty == D("0.046") and d.side == "LONG"
    assert d.context["safe_close_qty"] == "0.046"


@pytest.mark.parametrize(
    ("amt", "action", "step", "qty"),
    [
        ("0.003", "PARTIAL_50", "0.001", "0.001"),  # 0.0015 → 0.001, never 0.002
        ("0.062", "PARTIAL_75", "0.01", "0.04"),  # the step comes from the filters
        ("0.0999", "PARTIAL_25", "0.0001", "0.0249"),
        ("7", "PARTIAL_75", "1", "5"),
    ],
)
def test_rounding_is_always_down_to_the_symbols_step(
    amt: str, action: str, step: str, qty: str
) -> None:
    d = judge(amt, action=action, step=step, min_qty=step)
    assert d.allow and d.safe_close_qty == D(qty)
    assert safe_close_qty(Action(action), D(amt), D(step)) == D(qty)


def test_short_positions_close_with_a_buy() -> None:
    d = judge("-0.062", action="PARTIAL_75")
    assert d.allow and d.safe_close_qty == D("0.046") and d.side == "SHORT"
    assert closing_side(D("-0.062")) == "BUY"


def test_a_fraction_that_rounds_below_min_qty_is_refused() -> None:
    d = judge("0.004", action="PARTIAL_25", min_qty="0.002")  # 0.001 < 0.002
    assert (d.allow, d.reason) == (False, "below_min_qty")
    assert d.context["safe_close_qty"] == "0.001" and d.context["min_qty"] == "0.002"
    assert judge("0.001", action="PARTIAL_50").reason == "below_min_qty"  # rounds to 0


def test_a_full_close_of_a_tiny_remainder_is_allowed() -> None:
    for amt in ("0.004", "0.002", "-0.002"):
        d = judge(amt, action="FULL_CLOSE_PROPOSED", min_qty="0.002")
        assert d.allow and d.safe_close_qty == abs(D(amt))
    d = judge("0.001", action="FULL_CLOSE_PROPOSED")
    assert d.allow and d.safe_close_qty == D("0.001")
