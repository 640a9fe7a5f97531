"""The trailing stop (``EXIT_TRAIL_R``): once in profit the stop follows the mark at a fixed
distance in R, only ever tightening, one move per ``EXIT_TRAIL_STEP_R``; a move counts once
the chain executed it (``settle``). Pure; no Redis.
Entry 100, risk fraction 1 %: 1 R = 1.00; no fees."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from permitchain.contract.models import Action
from permitchain.exit_brain.kernel import (
    Book,
    Components,
    ExitParams,
    PositionView,
    decide,
    settle,
)

D = Decimal
NOW = 1_700_000_000.0
TRAIL = ExitParams(fee_rate=D(0), trail_r=D(2), trail_step_r=D("0.5"))


def walk(marks: list[str], is_long: bool = True, p: ExitParams = TRAIL) -> list[str | None]:
    """Feed the marks through decide(), keeping the book; the stop after each mark."""
    book = Book(tranches_done=3)  # no harvests: only stop moves are left to propose
    stops: list[str | None] = []
    for m in marks:
        d = decide(PositionView(D(100), D(m), is_long, D("0.1")), Components(), book, p, NOW)
        if d.action is Action.UPDATE_SL:
            book = settle(d.book, True, NOW, p)  # the chain executed the stop move
        stops.append(str(book.stop) if book.stop is not None else None)
    return stops


def test_a_long_stop_trails_two_r_behind_and_never_loosens() -> None:
    # R 0.5: 98.5 is under the initial 99 stop; 1.5 R: break-even (100.2) is tighter;
    # 3 R: 101; 3.2 R: 101.2 moves only 0.2 R (< 0.5 R step); 3.6 R: 101.6; back down: stays
    assert walk(["100.5", "101.5", "103", "103.2", "103.6", "102", "101"]) == [
        None,
        "100.2",
        "101.0",
        "101.0",
        "101.6",
        "101.6",
        "101.6",
    ]


def test_a_short_stop_trails_above() -> None:
    assert walk(["97", "96", "95.4", "98"], is_long=False) == ["99.0", "98.0", "97.4", "97.4"]


def test_trailing_off_keeps_break_even_only() -> None:
    off = replace(TRAIL, trail_r=D(0))
    assert walk(["101.5", "103", "110"], p=off) == ["100.2", "100.2", "100.2"]


def test_each_trailing_move_is_its_own_plan() -> None:
    """Every move is an UPDATE_SL with the next tranche number: a new plan id each time."""
    book = Book(tranches_done=3)
    tranches = []
    for m in ["101.5", "103", "104", "105"]:
        d = decide(PositionView(D(100), D(m), True, D("0.1")), Components(), book, TRAIL, NOW)
        if d.action is Action.UPDATE_SL:
            tranches.append((d.tranche, str(d.new_sl)))
            book = settle(d.book, True, NOW, TRAIL)
    assert tranches == [(1, "100.2"), (2, "101.0"), (3, "102.0"), (4, "103.0")]
