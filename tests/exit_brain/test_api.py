"""The Python API for external proposals, and the exit state's rules."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from permitchain.apply_layer.planner import PlannerPolicy, make_plan
from permitchain.contract.errors import ConfigError, ContractError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, PlanDecision, Proposal, make_plan_id
from permitchain.contract.settings import load_settings
from permitchain.exit_brain import state
from permitchain.exit_brain.api import build_proposal, expected_plan_id, propose
from permitchain.exit_brain.kernel import Book

NOW = 1_700_000_000.0


def test_build_proposal_defaults_and_identity() -> None:
    p = build_proposal(
        "BTCUSDT", Action.PARTIAL_25, new_sl="100.2", position_epoch=2, tranche=1, now=NOW
    )
    assert p.kill_score == Decimal("0.5") and p.source == "api" and p.new_sl == Decimal("100.2")
    policy = PlannerPolicy(frozenset({"BTCUSDT"}), Decimal("0.5"), 60, 30, "testnet")
    plan = make_plan(p, policy, NOW)
    assert plan.decision is PlanDecision.EXECUTE and plan.plan_id == expected_plan_id(p)
    assert Proposal.from_fields(p.to_fields()) == p


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "CLOSE_EVERYTHING"}, "action: unknown"),
        ({"symbol": "btc-usdt"}, "symbol"),
        ({"kill_score": "1.5"}, "kill_score"),
        ({"kill_score": 0.7}, "kill_score"),  # floats are refused: decimal strings only
        ({"new_sl": "abc"}, "new_sl"),
        ({"action": "UPDATE_SL"}, "UPDATE_SL needs"),
        ({"tranche": -1}, "tranche"),
    ],
)
def test_build_proposal_rejects(kwargs: dict[str, Any], message: str) -> None:
    args = {"symbol": "BTCUSDT", "action": "PARTIAL_50", **kwargs}
    with pytest.raises(ContractError, match=message):
        build_proposal(args.pop("symbol"), args.pop("action"), **args)


def test_propose_writes_hash_and_stream_with_the_ledger_epoch(
    arun: Callable[..., Any], keys: Keys
) -> None:
    async def body(r: Any) -> Any:
        await r.hset(keys.ledger("ETHUSDT"), mapping={"last_known_amt": "1", "epoch": "3"})
        p = await propose(
            r, keys, "ETHUSDT", "PARTIAL_50", kill_score="0.62", ttl_s=30, source="strategy-x"
        )
        return (
            p,
            await r.hgetall(keys.proposal("ETHUSDT")),
            await r.ttl(keys.proposal("ETHUSDT")),
            await r.xrange(keys.proposal_stream),
        )

    p, h, ttl, entries = arun(body)
    assert p.position_epoch == 3 and p.source == "strategy-x"
    assert h == p.to_fields() and 0 < ttl <= 30
    assert [f for _i, f in entries] == [p.to_fields()]


# -- exit state ---------------------------------------------------------------------------
def test_state_round_trip_and_malformed() -> None:
    st = state.Stored(Book(2, 1, Decimal("100.2"), 1, 0, 0.0), "LONG", NOW)
    assert state.parse_state(state.state_fields(st, NOW)) == st
    assert state.parse_state({}) is None
    with pytest.raises(ContractError):
        state.parse_state({"epoch": "x"})
    with pytest.raises(ContractError):
        state.parse_state({"epoch": "1", "side": "SIDEWAYS"})


def test_state_advance_rules() -> None:
    old = state.Stored(Book(epoch=2, tranches_done=3, stop=Decimal(101)), "LONG", NOW - 100)
    same = state.advance(old, 2, "LONG", NOW)
    assert same == old  # a restart keeps everything
    newer = state.advance(old, 3, "LONG", NOW)
    assert newer == state.Stored(Book(epoch=3), "LONG", NOW - 100)  # fresh book, same trade
    flipped = state.advance(old, 2, "SHORT", NOW)
    assert flipped is not None and flipped.opened_at == NOW and flipped.book == old.book
    flat = state.advance(old, 2, "NONE", NOW)
    assert flat is not None and flat.opened_at is None and flat.book == old.book
    assert state.advance(old, 1, "LONG", NOW) is None  # the epoch went backwards
    assert state.advance(None, 0, "LONG", NOW) == state.Stored(Book(), "LONG", NOW)


def test_exit_settings_load_from_the_environment() -> None:
    s = load_settings(
        {
            "EXIT_INTERVAL_S": "0.5",
            "SIM_DRIVE_PRICES": "false",
            "EXIT_RISK_FRACTION": "0.02",
            "SIM_PRICE_SEED": "11",
        }
    )
    assert (s.exit_interval_s, s.sim_drive_prices, s.sim_price_seed) == (0.5, False, 11)
    assert s.exit_risk_fraction == Decimal("0.02") and s.exit_fee_rate == Decimal("0.0004")
    for bad in ({"EXIT_RISK_FRACTION": "0"}, {"SIM_DRIVE_PRICE": "true"}, {"EXIT_INTERVAL_S": "x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))[:14]):
            load_settings(bad)


def test_state_keeps_the_pending_proposal() -> None:
    b = Book(
        epoch=1,
        proposals=3,
        pending_action="PARTIAL_50",
        pending_level=2,
        pending_sl=Decimal("100.2"),
        pending_since=NOW,
        retry_at=NOW - 5,
    )
    st = state.Stored(b, "LONG", NOW)
    assert state.parse_state(state.state_fields(st, NOW)) == st
    assert state.pending_plan_id("BTCUSDT", b) == make_plan_id("BTCUSDT", "PARTIAL_50", 1, 3)
    assert state.pending_plan_id("BTCUSDT", Book()) is None
    with pytest.raises(ContractError, match="pending_action"):
        state.parse_state({"epoch": "1", "pending_action": "SELL_EVERYTHING"})


@pytest.mark.parametrize(
    ("exec_state", "age_s", "expect"),
    [
        ("filled", 1, True),
        ("partially_filled", 1, True),
        ("unknown", 1, True),  # the order may exist: never proposed again as if not
        ("blocked", 1, False),
        ("rejected", 1, False),
        ("dry_run", 1, False),
        ("permitted", 500, None),  # on its way: wait
        ("submitted", 500, None),
        (None, 10, None),  # no record yet
        (None, 100, False),  # no record after the timeout: it can no longer execute
    ],
)
def test_outcome_of_a_pending_plan(
    exec_state: str | None, age_s: float, expect: bool | None
) -> None:
    assert state.outcome(exec_state, NOW, NOW + age_s, timeout_s=97) is expect


def test_bar_and_calibration_settings() -> None:
    s = load_settings(
        {"EXIT_BAR_S": "60", "EXIT_TRANCHE_R": "1.5, 3,4.5", "EXIT_SHORT_WINDOW": "30"}
    )
    assert (s.exit_bar_s, s.exit_tranche_r, s.exit_short_window) == (60.0, "1.5,3,4.5", 30)
    defaults = load_settings({})
    assert (defaults.exit_bar_s, defaults.full_close_score, defaults.exit_break_even_r) == (
        300.0,
        Decimal("0.78"),
        Decimal("1.5"),
    )
    for bad in (
        {"EXIT_TRANCHE_R": "4,2,6"},
        {"EXIT_TRANCHE_R": "2,4"},
        {"EXIT_BAR_S": "0"},
        {"EXIT_SHORT_WINDOW": "2"},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_settings(bad)
