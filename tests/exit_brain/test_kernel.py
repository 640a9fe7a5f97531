"""The exit kernel: kill score, R_net, tranches, stop moves. Pure; no Redis."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from permitchain.contract.models import Action
from permitchain.exit_brain.kernel import (
    Book,
    Components,
    ExitParams,
    PositionView,
    age_penalty,
    break_even_stop,
    decide,
    kill_score,
    r_net,
    regime_flip,
    settle,
    sigma_spike,
    ts_drop,
)

REFERENCE = Components(regime_flip=0, sigma_spike=0.1084, ts_drop=0.1789, age_penalty=0.0417)
P = ExitParams()
NO_FEES = replace(P, fee_rate=Decimal(0))
NOW = 1_700_000_000.0

prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100_000), places=2)
unit = st.floats(min_value=0, max_value=1)


def test_reference_components_give_0_5390() -> None:
    assert kill_score(REFERENCE) == Decimal("0.5390")
    # and the same through decide(), which scores the reported (4-place) components
    d = decide(PositionView(Decimal(100), Decimal(101), True), REFERENCE, Book(), P, NOW)
    assert d.kill_score == Decimal("0.5390")


def test_component_formulas() -> None:
    assert regime_flip(0.29, 0.5, 0.21) == 1
    assert regime_flip(0.3, 0.5, 0.2) == 0  # trend not below 0.3
    assert regime_flip(0.1, 0.2, 0.2) == 0  # chop + mean reversion not above 0.5
    assert sigma_spike(0.002, 0.001) == pytest.approx(1.0)
    assert sigma_spike(0.01, 0.001) == 2.0  # clamped
    assert sigma_spike(0.0005, 0.001) == 0.0
    assert sigma_spike(0.001, 0.0) == 0.0  # no reference, no evidence
    assert ts_drop(0.1211) == pytest.approx(0.1789)
    assert ts_drop(-1.0) == 0.5 and ts_drop(0.9) == 0.0
    assert age_penalty(3600) == pytest.approx(0.0417, abs=5e-5)
    assert age_penalty(10 * 86400) == 1.0 and age_penalty(-5) == 0.0


@given(unit, st.floats(0, 2), st.floats(0, 0.5), unit)
def test_score_is_at_least_half_and_bounded(a: float, b: float, c: float, d: float) -> None:
    s = kill_score(Components(float(a >= 0.5), b, c, d))
    assert Decimal("0.5") <= s <= Decimal("0.9277")
    assert kill_score(Components()) == Decimal("0.5")


def test_r_net_units_long_and_short() -> None:
    # long 100 → 107, fees 0.04 % a side: (7 − 0.0004·207) / (100·0.01) = 6.9172
    assert r_net(Decimal(100), Decimal(107), True, Decimal("0.01"), Decimal("0.0004")) == Decimal(
        "6.9172"
    )
    # short 100 → 93: (7 − 0.0004·193) / 1 = 6.9228
    assert r_net(Decimal(100), Decimal(93), False, Decimal("0.01"), Decimal("0.0004")) == Decimal(
        "6.9228"
    )
    # truncated toward zero: never reports a level it has not reached
    assert r_net(Decimal(3), Decimal("3.0599997"), True, Decimal("0.01"), Decimal(0)) == Decimal(
        "1.9999"
    )


def test_reference_partial_75_with_break_even_stop() -> None:
    """docs/design.md §8: entry 100, R_net 7.0136 → PARTIAL_75, new SL 100.2."""
    # mark such that R_net = 7.0136 exactly without fees: 100 + 7.0136
    pos = PositionView(Decimal(100), Decimal("107.0136"), True, Decimal("0.1"))
    d = decide(pos, REFERENCE, Book(), NO_FEES, NOW)
    assert d.r_net == Decimal("7.0136")
    assert (d.action, d.tranche, d.new_sl) == (Action.PARTIAL_75, 1, Decimal("100.2"))
    assert d.kill_score == Decimal("0.5390")
    assert d.book == Book(
        proposals=1,
        pending_action="PARTIAL_75",
        pending_level=3,
        pending_sl=Decimal("100.2"),
        pending_since=NOW,
    )
    executed = settle(d.book, True, NOW + 1, P)
    assert executed == Book(proposals=1, tranches_done=3, stop=Decimal("100.2"))
    assert break_even_stop(Decimal(100), False) == Decimal("99.8")


def test_tranche_ladder_each_once_per_epoch() -> None:
    book = Book(epoch=4)
    seen = []
    for mark in ("101.6", "102.1", "102.5", "104.2", "106.5", "110", "103"):
        d = decide(
            PositionView(Decimal(100), Decimal(mark), True), Components(), book, NO_FEES, NOW
        )
        book = settle(d.book, True, NOW, NO_FEES)  # the chain executed each proposal
        seen.append((d.action, d.tranche))
    assert seen == [
        (Action.UPDATE_SL, 1),  # R 1.6: stop to break-even + 0.2 %
        (Action.PARTIAL_25, 2),
        (Action.HOLD, 0),  # R 2.5 again: PARTIAL_25 already executed, stop already there
        (Action.PARTIAL_50, 3),
        (Action.PARTIAL_75, 4),
        (Action.HOLD, 0),
        (Action.HOLD, 0),  # back at R 3: nothing repeats
    ]
    assert book.epoch == 4 and book.tranches_done == 3 and book.proposals == 4


def test_highest_tranche_spends_the_lower_ones() -> None:
    d = decide(PositionView(Decimal(100), Decimal(105), True), Components(), Book(), NO_FEES, NOW)
    assert (d.action, d.tranche) == (Action.PARTIAL_50, 1)
    again = decide(
        PositionView(Decimal(100), Decimal("102.5"), True),
        Components(),
        settle(d.book, True, NOW, NO_FEES),
        NO_FEES,
        NOW,
    )
    assert again.action is Action.HOLD


def test_new_epoch_allows_tranches_again() -> None:
    pos = PositionView(Decimal(100), Decimal(107), True)
    first = decide(pos, Components(), Book(epoch=0), NO_FEES, NOW)
    assert first.action is Action.PARTIAL_75
    done = settle(first.book, True, NOW, NO_FEES)
    assert decide(pos, Components(), done, NO_FEES, NOW).action is Action.HOLD
    fresh = decide(pos, Components(), Book(epoch=1), NO_FEES, NOW)
    assert (fresh.action, fresh.tranche, fresh.book.epoch) == (Action.PARTIAL_75, 1, 1)


@pytest.mark.parametrize(
    ("is_long", "mark", "current", "expect"),
    [
        (True, "101.7", None, "100.2"),  # no stop of ours: the 1 R stop at 99 is looser
        (True, "101.7", "100.1", "100.2"),  # tighter than ours: moved
        (True, "101.7", "100.5", None),  # ours is tighter already: never loosened
        (True, "101.7", "100.2", None),  # equal: no move
        (False, "98.3", None, "99.8"),
        (False, "98.3", "99.9", "99.8"),
        (False, "98.3", "99.5", None),
    ],
)
def test_stop_only_tightens(
    is_long: bool, mark: str, current: str | None, expect: str | None
) -> None:
    book = Book(tranches_done=3, stop=Decimal(current) if current else None)
    d = decide(PositionView(Decimal(100), Decimal(mark), is_long), Components(), book, NO_FEES, NOW)
    assert d.new_sl == (Decimal(expect) if expect else None)
    assert d.action is (Action.UPDATE_SL if expect else Action.HOLD)


def test_no_stop_below_one_and_a_half_r() -> None:
    d = decide(
        PositionView(Decimal(100), Decimal("101.49"), True), Components(), Book(), NO_FEES, NOW
    )
    assert d.action is Action.HOLD and d.new_sl is None


def test_stop_rounded_to_tick_away_from_entry() -> None:
    def stop(mark: int, is_long: bool) -> Decimal | None:
        pos = PositionView(Decimal("123.45"), Decimal(mark), is_long, Decimal("0.1"))
        return decide(pos, Components(), Book(tranches_done=3), NO_FEES, NOW).new_sl

    assert stop(130, True) == Decimal("123.7")  # 123.6969 up to the tick
    assert stop(117, False) == Decimal("123.2")  # 123.2031 down to the tick


def test_full_close_first_then_retries_then_gives_up() -> None:
    flip = Components(regime_flip=1)  # sigmoid(1) = 0.7311 ≥ 0.6
    pos = PositionView(Decimal(100), Decimal(107), True)
    d1 = decide(pos, flip, Book(), P, NOW)
    assert (d1.action, d1.tranche, d1.new_sl) == (Action.FULL_CLOSE_PROPOSED, 1, None)
    assert d1.kill_score == Decimal("0.7311")
    assert decide(pos, flip, d1.book, P, NOW + 500).action is Action.HOLD  # awaiting outcome
    b1 = settle(d1.book, True, NOW + 1, P)  # executed (a partial fill left some)
    assert decide(pos, flip, b1, P, NOW + 59).action is Action.HOLD  # full_close_retry_s
    d2 = decide(pos, flip, b1, P, NOW + 61)
    d3 = decide(pos, flip, settle(d2.book, True, NOW + 61, P), P, NOW + 121)
    assert [(d.action, d.tranche) for d in (d2, d3)] == [
        (Action.FULL_CLOSE_PROPOSED, 2),
        (Action.FULL_CLOSE_PROPOSED, 3),
    ]
    gave_up = settle(d3.book, True, NOW + 121, P)
    assert decide(pos, flip, gave_up, P, NOW + 1000).action is Action.HOLD


def test_not_executed_leaves_it_available_after_the_retry_pause() -> None:
    """A denied or blocked plan spends nothing: the same exit is proposed again (as a new
    plan: the next tranche number) once ``retry_s`` has passed."""
    pos = PositionView(Decimal(100), Decimal("102.5"), True)
    d1 = decide(pos, Components(), Book(), NO_FEES, NOW)
    assert (d1.action, d1.tranche) == (Action.PARTIAL_25, 1)
    denied = settle(d1.book, False, NOW + 1, NO_FEES)
    assert denied.tranches_done == 0 and denied.stop is None and not denied.pending
    assert (
        decide(pos, Components(), denied, NO_FEES, NOW + 1 + NO_FEES.retry_s - 1).action
        is Action.HOLD
    )
    d2 = decide(pos, Components(), denied, NO_FEES, NOW + 1 + NO_FEES.retry_s)
    assert (d2.action, d2.tranche, d2.new_sl) == (Action.PARTIAL_25, 2, Decimal("100.2"))
    # a denied full close is not an attempt: after three denials a fourth is still proposed
    flip, book = Components(regime_flip=1), Book()
    for i in range(4):
        d = decide(pos, flip, book, P, NOW + 100 * i)
        assert d.action is Action.FULL_CLOSE_PROPOSED
        book = settle(d.book, False, NOW + 100 * i, P)
    assert book.full_close_attempts == 0


def test_below_full_close_score_harvests() -> None:
    # sigma spike 2 and ts drop 0.5: x = 0.5·2 + 0.5·0.5 = 1.25 → 0.7773: full close
    assert (
        decide(
            PositionView(Decimal(100), Decimal(103), True), Components(0, 2, 0.5, 0), Book(), P, NOW
        ).action
        is Action.FULL_CLOSE_PROPOSED
    )
    # x = 0.5·0.5 + 0.3·0.4 = 0.37 → 0.5915 < 0.6: harvest by R instead
    d = decide(
        PositionView(Decimal(100), Decimal(103), True), Components(0, 0, 0.5, 0.4), Book(), P, NOW
    )
    assert d.kill_score == Decimal("0.5915") and d.action is Action.PARTIAL_25


@given(
    entry=prices,
    move=st.decimals(min_value=Decimal("-0.99"), max_value=Decimal("0.99"), places=4),
    done=st.integers(0, 3),
)
def test_long_short_symmetry(entry: Decimal, move: Decimal, done: int) -> None:
    """A long at entry·(1+m) is the mirror of a short at entry·(1−m): same R_net, same action,
    stops mirrored around entry. With fees, long + short R_net = −2·fees/risk."""
    up, down = entry * (1 + move), entry * (1 - move)
    book = Book(tranches_done=done)
    long = decide(PositionView(entry, up, True), Components(), book, NO_FEES, NOW)
    short = decide(PositionView(entry, down, False), Components(), book, NO_FEES, NOW)
    assert long.r_net == short.r_net
    assert (long.action, long.tranche) == (short.action, short.tranche)
    if long.new_sl is not None:
        assert short.new_sl is not None
        assert long.new_sl - entry == entry - short.new_sl
    else:
        assert short.new_sl is None
    # the same price, both directions: the PnL cancels, two round trips of fees remain
    risk, rate = P.risk_fraction, P.fee_rate
    lr, sr = r_net(entry, up, True, risk, rate), r_net(entry, up, False, risk, rate)
    exact = -2 * rate * (entry + up) / (entry * risk)
    assert abs((lr + sr) - exact) <= Decimal("0.0002")


@given(
    mark=st.decimals(min_value=Decimal(90), max_value=Decimal(120), places=2),
    stop=st.one_of(st.none(), st.decimals(min_value=Decimal(95), max_value=Decimal(105), places=2)),
    is_long=st.booleans(),
)
def test_proposed_stop_always_tightens_and_protects(
    mark: Decimal, stop: Decimal | None, is_long: bool
) -> None:
    entry = Decimal(100)
    m = mark if is_long else 2 * entry - mark
    d = decide(PositionView(entry, m, is_long), Components(), Book(stop=stop), NO_FEES, NOW)
    if d.new_sl is not None:
        if is_long:
            assert (stop is None or d.new_sl > stop) and d.new_sl < m
        else:
            assert (stop is None or d.new_sl < stop) and d.new_sl > m
        assert settle(d.book, True, NOW, NO_FEES).stop == d.new_sl
