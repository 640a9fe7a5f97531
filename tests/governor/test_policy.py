"""The governor policy without Redis: every mode, every trading state, caps, rate edges."""

from __future__ import annotations

from decimal import Decimal

import pytest

from permitchain.contract import reasons
from permitchain.contract.models import CANARY_SYMBOL, Action, Plan, ResultStatus
from permitchain.contract.reasons import CANARY_DRY_RUN
from permitchain.contract.trading_state import TradingState, parse_trading_state
from permitchain.governor.policy import GovernorInput, GovernorPolicy, decide, is_reduce_only
from permitchain.governor.rates import ReservationBook
from permitchain.runtime.clock import FixedClock

from .plans import T0, plan, risk_increasing

ALLOW = frozenset({"BTCUSDT", "ETHUSDT"})
ACTIVE = TradingState.ACTIVE
POSITION = {
    "position_amt": Decimal("0.062"),
    "mark_price": Decimal(107),
    "step_size": Decimal("0.001"),
}


def pol(mode: str = "production", **kw: object) -> GovernorPolicy:
    return GovernorPolicy(mode=mode, allow_list=ALLOW, plan_max_age_s=30, **kw)  # type: ignore[arg-type]


def inp(state: TradingState = ACTIVE, **kw: object) -> GovernorInput:
    return GovernorInput(trading_state=state, **{**POSITION, **kw})  # type: ignore[arg-type]


# -- trading state -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "state"),
    [
        (None, TradingState.ACTIVE),  # absent means ACTIVE
        ("ACTIVE", TradingState.ACTIVE),
        ("REDUCING", TradingState.REDUCING),
        ("HALTED", TradingState.HALTED),
        (b"ACTIVE", TradingState.HALTED),  # bytes never pass for a str
        (b"HALTED", TradingState.HALTED),
        ("active", TradingState.HALTED),
        ("Active", TradingState.HALTED),
        (" ACTIVE", TradingState.HALTED),
        ("ACTIVE\n", TradingState.HALTED),
        ("", TradingState.HALTED),
        ("RUNNING", TradingState.HALTED),
        ("1", TradingState.HALTED),
        (1, TradingState.HALTED),
        ({"state": "ACTIVE"}, TradingState.HALTED),
    ],
)
def test_trading_state_parsing_fails_closed(raw: object, state: TradingState) -> None:
    assert parse_trading_state(raw) is state


@pytest.mark.parametrize("mode", ["dry_run", "testnet", "production"])
def test_halted_denies_in_every_mode(mode: str) -> None:
    d = decide(plan(mode=mode), inp(TradingState.HALTED), pol(mode), T0)
    assert (d.granted, d.reason) == (False, "trading_halted")


@pytest.mark.parametrize("mode", ["dry_run", "testnet", "production"])
def test_garbage_state_halts_in_every_mode(mode: str) -> None:
    state = parse_trading_state(b"\xff garbage")
    d = decide(plan(mode=mode), inp(state), pol(mode), T0)
    assert (d.granted, d.reason) == (False, "trading_halted")


@pytest.mark.parametrize(
    "action", [Action.PARTIAL_25, Action.FULL_CLOSE_PROPOSED, Action.UPDATE_SL]
)
def test_reducing_lets_reduce_only_plans_through(action: Action) -> None:
    p = plan(action)
    assert is_reduce_only(p)
    d = decide(p, inp(TradingState.REDUCING), pol(), T0)
    assert (d.granted, d.reason) == (True, "policy_ok")


def test_reducing_denies_a_risk_increasing_plan() -> None:
    p = risk_increasing(plan(mode="testnet"))
    assert not is_reduce_only(p)
    d = decide(p, inp(TradingState.REDUCING), pol("testnet"), T0)
    assert (d.granted, d.reason) == (False, "trading_reducing")


# -- modes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["dry_run", "testnet"])
def test_auto_approve_fills_in_qty_and_notional(mode: str) -> None:
    d = decide(plan(mode=mode), inp(), pol(mode), T0)
    assert (d.granted, d.reason) == (True, "testnet_auto_approve")
    assert d.computed_qty == Decimal("0.046")  # 0.75 × 0.062 rounded down to 0.001
    assert d.computed_notional == Decimal("4.922")
    assert isinstance(d.computed_notional, Decimal)


def test_auto_approve_without_a_snapshot_leaves_qty_unknown() -> None:
    d = decide(plan(mode="testnet"), GovernorInput(trading_state=ACTIVE), pol("testnet"), T0)
    assert (d.granted, d.computed_qty, d.computed_notional) == (True, None, None)


@pytest.mark.parametrize("mode", ["dry_run", "testnet"])
def test_auto_approve_off_applies_the_policy(mode: str) -> None:
    policy = pol(mode, testnet_auto_approve=False)
    assert decide(plan(mode=mode), inp(), policy, T0).reason == "policy_ok"
    d = decide(plan(mode=mode), inp(exec_last_5min=2), policy, T0)
    assert (d.granted, d.reason) == (False, "rate_limit_5min")


def test_production_never_auto_approves() -> None:
    d = decide(plan(), inp(exec_last_5min=2, exec_last_hour=2), pol(testnet_auto_approve=True), T0)
    assert (d.granted, d.reason) == (False, "rate_limit_5min")


@pytest.mark.parametrize(
    ("plan_mode", "gov_mode"),
    [
        ("testnet", "production"),
        ("production", "testnet"),
        ("dry_run", "testnet"),
        ("testnet", "dry_run"),
    ],
)
def test_mode_mismatch(plan_mode: str, gov_mode: str) -> None:
    d = decide(plan(mode=plan_mode), inp(), pol(gov_mode), T0)
    assert (d.granted, d.reason) == (False, "mode_mismatch")
    assert d.context == {"plan_mode": plan_mode, "governor_mode": gov_mode}


def test_symbol_not_in_allowlist() -> None:
    d = decide(plan(symbol="DOGEUSDT"), inp(), pol(), T0)
    assert (d.granted, d.reason) == (False, "not_in_allowlist")


# -- plan age ------------------------------------------------------------------------------
def test_plan_age_edge_with_injected_clock() -> None:
    clock = FixedClock(T0)
    p = plan(created_at=T0)
    clock.advance(30)  # exactly PLAN_MAX_AGE_S: still valid
    assert decide(p, inp(), pol(), clock.now()).granted
    clock.advance(0.001)
    d = decide(p, inp(), pol(), clock.now())
    assert (d.granted, d.reason) == (False, "plan_expired")
    assert d.context["max_age_s"] == 30


@pytest.mark.parametrize("mode", ["dry_run", "testnet", "production"])
def test_replayed_backlog_is_expired_in_every_mode_and_state(mode: str) -> None:
    p = plan(mode=mode, created_at=T0 - 3600)
    for state in TradingState:
        assert decide(p, inp(state), pol(mode), T0).reason == "plan_expired"


def test_plan_expires_at_earlier_than_max_age_counts() -> None:
    p = plan(created_at=T0).model_copy(update={"expires_at": T0 + 5})
    assert decide(p, inp(), pol(), T0 + 6).reason == "plan_expired"


# -- rate limits ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("five", "hour", "reason"),
    [
        (0, 0, "policy_ok"),
        (1, 1, "policy_ok"),
        (1, 2, "policy_ok"),
        (2, 2, "rate_limit_5min"),
        (1, 3, "rate_limit_hour"),
        (2, 3, "rate_limit_5min"),
    ],
)
def test_rate_limits_on_counts(five: int, hour: int, reason: str) -> None:
    assert decide(plan(), inp(exec_last_5min=five, exec_last_hour=hour), pol(), T0).reason == reason


def _decide_with(book: ReservationBook, now: float) -> str:
    c = book.counts(now)
    return decide(
        plan(created_at=now),
        inp(exec_last_5min=c.last_5min, exec_last_hour=c.last_hour),
        pol(),
        now,
    ).reason


def test_five_minute_window_edge() -> None:
    clock = FixedClock(T0)
    book = ReservationBook()
    book.executed.update({"a": T0, "b": T0 + 1})
    clock.advance(299)
    assert _decide_with(book, clock.now()) == "rate_limit_5min"
    clock.t = T0 + 300  # "a" is exactly 5 min old: out of the window
    assert _decide_with(book, clock.now()) == "policy_ok"
    clock.t = T0 + 299.999
    assert _decide_with(book, clock.now()) == "rate_limit_5min"


def test_hour_window_edge() -> None:
    book = ReservationBook()
    book.executed.update({"a": T0, "b": T0 + 600, "c": T0 + 1200})  # 3 in the hour, 0 in 5 min
    assert _decide_with(book, T0 + 3599.999) == "rate_limit_hour"
    assert _decide_with(book, T0 + 3600) == "policy_ok"  # "a" exactly one hour old: out
    assert book.counts(T0 + 3600).last_hour == 2


def test_reservations_count_until_they_expire() -> None:
    book = ReservationBook()
    ttl = 61.2  # PERMIT_TTL_SECONDS 60 + APPLY_PERMIT_WAIT_MS 1200
    assert book.reserve("p1", T0, ttl, 2, 3) == "reserved"
    assert book.reserve("p2", T0 + 1, ttl, 2, 3) == "reserved"
    assert book.reserve("p3", T0 + 2, ttl, 2, 3) == "rate_limit_5min"
    assert _decide_with(book, T0 + 2) == "rate_limit_5min"
    assert _decide_with(book, T0 + 61.199) == "rate_limit_5min"
    assert _decide_with(book, T0 + 61.2) == "policy_ok"  # p1 expired unused: its slot is free
    assert book.counts(T0 + 61.2).reserved == 1
    assert book.reserve("p3", T0 + 61.2, ttl, 2, 3) == "reserved"
    assert book.reserve("p3", T0 + 62, ttl, 2, 3) == "already"  # a redelivery: no new slot


@pytest.mark.parametrize(
    ("status", "freed"),
    [
        (ResultStatus.REJECTED, True),
        (ResultStatus.BLOCKED, True),
        (ResultStatus.DRY_RUN, True),
        (ResultStatus.FILLED, False),
        (ResultStatus.PARTIALLY_FILLED, False),
        (ResultStatus.UNKNOWN, False),
    ],
)
def test_results_release_or_confirm(status: ResultStatus, freed: bool) -> None:
    book = ReservationBook()
    book.reserve("p1", T0, 61.2, 2, 3)
    book.reserve("p2", T0, 61.2, 2, 3)
    assert _decide_with(book, T0 + 1) == "rate_limit_5min"
    book.settle("p1", status, T0 + 1)
    assert (_decide_with(book, T0 + 2) == "policy_ok") is freed
    # a confirmed execution keeps counting after the reservation would have expired
    assert book.counts(T0 + 100).last_5min == (0 if freed else 1)
    assert book.counts(T0 + 100).last_hour == (0 if freed else 1)


# -- notional caps -------------------------------------------------------------------------
def test_reduce_only_close_is_never_capped() -> None:
    huge = inp(
        position_amt=Decimal(5000), mark_price=Decimal(100000), notional_today=Decimal(10**9)
    )
    p = plan(Action.FULL_CLOSE_PROPOSED).model_copy(update={"kill_score": Decimal(1)})
    d = decide(p, huge, pol(max_notional_per_trade=Decimal(1), daily_notional_cap=Decimal(1)), T0)
    assert (d.granted, d.reason) == (True, "policy_ok")
    assert d.computed_notional == Decimal(500_000_000)


def test_risk_increasing_per_trade_cap() -> None:
    p = risk_increasing(plan(Action.FULL_CLOSE_PROPOSED))
    policy = pol(max_notional_per_trade=Decimal("6.634"))  # 0.062 × 107
    assert decide(p, inp(), policy, T0).reason == "policy_ok"
    policy = pol(max_notional_per_trade=Decimal("6.633"))
    assert decide(p, inp(), policy, T0).reason == "notional_cap"


def test_risk_increasing_daily_cap() -> None:
    p = risk_increasing(plan(Action.FULL_CLOSE_PROPOSED))
    policy = pol(daily_notional_cap=Decimal(100))
    assert decide(p, inp(notional_today=Decimal("93.366")), policy, T0).reason == "policy_ok"
    d = decide(p, inp(notional_today=Decimal("93.367")), policy, T0)
    assert (d.granted, d.reason) == (False, "daily_notional_cap")


def test_risk_increasing_with_unknown_notional_is_denied() -> None:
    p = risk_increasing(plan())
    d = decide(p, GovernorInput(trading_state=ACTIVE), pol(), T0)
    assert (d.granted, d.reason) == (False, "notional_cap")


def test_rate_limit_comes_before_caps() -> None:
    p = risk_increasing(plan())
    d = decide(p, inp(exec_last_hour=3), pol(max_notional_per_trade=Decimal(0)), T0)
    assert d.reason == "rate_limit_hour"


def test_every_reason_code_of_the_contract_is_defined() -> None:
    codes = {
        "testnet_auto_approve",
        "policy_ok",
        "trading_halted",
        "trading_reducing",
        "plan_expired",
        "mode_mismatch",
        "rate_limit_hour",
        "rate_limit_5min",
        "daily_notional_cap",
        "notional_cap",
    }
    assert codes <= {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}


# -- the canary (proof --canary) ----------------------------------------------------------
def canary(mode: str = "dry_run", source: str = "canary") -> Plan:
    p = plan(Action.PARTIAL_25, symbol=CANARY_SYMBOL, mode=mode)
    return p.model_copy(update={"source": source})


@pytest.mark.parametrize("gov_mode", ["dry_run", "testnet", "production"])
def test_the_canary_is_granted_in_every_mode_unless_halted(gov_mode: str) -> None:
    d = decide(canary(), inp(), pol(gov_mode), T0)
    assert (d.granted, d.reason) == (True, CANARY_DRY_RUN)
    assert d.computed_qty == Decimal("0.015")  # 0.25 × 0.062 = 0.0155, down to the step
    assert decide(canary(), inp(TradingState.HALTED), pol(gov_mode), T0).reason == "trading_halted"
    old = canary().model_copy(update={"created_at": T0 - 60, "expires_at": T0 - 30})
    assert decide(old, inp(), pol(gov_mode), T0).reason == "plan_expired"


@pytest.mark.parametrize(
    ("mode", "source"), [("testnet", "canary"), ("production", "canary"), ("dry_run", "cli")]
)
def test_only_a_dry_run_canary_gets_the_canary_treatment(mode: str, source: str) -> None:
    d = decide(canary(mode, source), inp(), pol("dry_run"), T0)
    assert not d.granted and d.reason in ("mode_mismatch", "not_in_allowlist")
