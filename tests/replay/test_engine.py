"""The replay engine: the exit brain's own kernel, fills at the next open, the gate's pure
decisions (threshold, rate limits, P3.3 rounding and min quantity), tranches only when
executed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from permitchain.apply_layer import planner
from permitchain.contract.errors import ConfigError
from permitchain.exit_brain import kernel, market
from permitchain.position_brain import checks
from permitchain.replay import engine, gate, runner
from permitchain.replay.data import Series
from permitchain.replay.entries import Entry, Rule, parse_rule

D = Decimal
T0 = 1_700_000_040.0  # not on an hour: rule entries wait for the next one


def series(closes: list[str], interval_s: float = 60.0) -> Series:
    """Candles opening at the previous close (the first at its own close)."""
    c = [D(x) for x in closes]
    opens = [c[0], *c[:-1]]
    return Series(
        "SYN-1m.csv",
        "SYN",
        interval_s,
        [T0 + interval_s * i for i in range(len(c))],
        opens,
        [max(a, b) for a, b in zip(opens, c, strict=True)],
        [min(a, b) for a, b in zip(opens, c, strict=True)],
        c,
    )


def run(s: Series, entries: Rule | list[Entry], **sets: str) -> engine.SeriesResult:
    settings, options = runner.build_settings({"EXIT_BAR_S": "60", **sets}, environ={})
    return runner.replay([s], settings, options, entries)[0]


RISING = ["100"] * 14 + ["102.5"] * 6  # R ≈ 2.4 from the close of candle 14


def test_the_replay_runs_the_exit_brains_own_code() -> None:
    assert engine.decide is kernel.decide and engine.settle is kernel.settle
    assert engine.market is market
    assert gate.make_plan is planner.make_plan and gate.checks is checks


def test_an_exit_fills_at_the_next_open_with_slippage_and_fees() -> None:
    s = series(RISING)
    res = run(s, [Entry(T0 + 60 * 12, "", True, D(1), D(100))], REPLAY_SLIPPAGE="0.001")
    (trade,) = res.trades
    first = trade.exits[0]
    assert (first.action, first.tranche, first.executed) == ("PARTIAL_25", 1, True)
    assert first.time_s == s.times[15]  # decided at the close of candle 14, filled at 15's open
    assert first.qty == D("0.25") and first.price == s.opens[15] * D("0.999")
    assert first.new_sl == D("100.200")  # break-even + 0.2 % rides along (R ≥ 1.5)
    fee = D("0.0004") * first.price * first.qty
    assert first.pnl == ((first.price - 100) * first.qty - fee).quantize(D("0.0001"))
    assert first.kill_score < D("0.51") and first.r_net is not None and first.r_net >= 2
    assert trade.exits[-1].action == engine.END and trade.qty == 1


def test_a_denied_plan_spends_nothing_and_is_proposed_again_after_the_pause() -> None:
    s = series(["100"] * 14 + ["102.5"] * 120)
    res = run(
        s, [Entry(T0 + 60 * 12, "", True, D(1), D(100))], MAX_EXEC_PER_HOUR="0", EXIT_RETRY_S="600"
    )
    exits = [e for e in res.trades[0].exits if e.action != engine.END]
    assert [(e.action, e.tranche, e.executed, e.reason) for e in exits[:2]] == [
        ("PARTIAL_25", 1, False, "governor:rate_limit_hour"),
        ("PARTIAL_25", 2, False, "governor:rate_limit_hour"),
    ]
    assert exits[1].time_s - exits[0].time_s == 600  # EXIT_RETRY_S, then the same exit again
    assert all(not e.executed for e in exits) and res.trades[0].exits[-1].qty == 1


def test_p33_rounds_down_to_the_step_and_refuses_below_min_qty() -> None:
    s = series(RISING)
    small = run(s, [Entry(T0 + 60 * 12, "", True, D("0.003"), D(100))])
    assert small.trades[0].exits[0].reason == "p33:below_min_qty"  # 0.00075 → 0 at step 0.001
    odd = run(s, [Entry(T0 + 60 * 12, "", True, D("0.011"), D(100))])
    assert odd.trades[0].exits[0].qty == D("0.002")  # 0.00275 rounded down to 0.001


def test_the_planner_threshold_applies() -> None:
    res = run(
        series(RISING), [Entry(T0 + 60 * 12, "", True, D(1), D(100))], KILL_SCORE_THRESHOLD="0.6"
    )
    assert res.trades[0].exits[0].reason == "planner:below_kill_score_threshold"


def test_a_stop_fills_at_the_stop_or_at_a_worse_open() -> None:
    s = series(["100"] * 14 + ["99.5", "98.5", "98"])  # 1 R stop at 99
    res = run(s, [Entry(T0 + 60 * 12, "", True, D(1), D(100))], REPLAY_SLIPPAGE="0")
    stop = next(e for e in res.trades[0].exits if e.action == engine.STOP)
    assert stop.time_s == s.times[15] and stop.price == D(99) and stop.qty == 1
    assert res.trades[0].r == D("-1.0796")  # −1 R and the fees (100 + 99) × 0.0004 / 1


def test_rule_entries_alternate_and_skip_while_open() -> None:
    s = series(["100"] * 200)
    rule = parse_rule("every:1h:alternate")
    assert rule is not None
    res = run(s, rule, FULL_CLOSE_SCORE="0.99")
    assert [t.is_long for t in res.trades] == [True]  # the first held to the end
    assert res.skipped_entries == 2
    assert res.trades[0].entry_s % 3600 == 0


def test_bars_shorter_than_the_candles_are_refused() -> None:
    with pytest.raises(ConfigError, match="EXIT_BAR_S=60 is shorter than the 300s candles"):
        run(series(RISING, interval_s=300), [])


def test_shared_files_replay_the_same_twice(klines: Path) -> None:
    settings, options = runner.build_settings({}, environ={})
    s = runner.load([str(klines / "ETH_BTC-5m.csv")])
    a = runner.replay(s, settings, options, runner.parse_entries("every:6h:alternate"))[0]
    b = runner.replay(s, settings, options, runner.parse_entries("every:6h:alternate"))[0]
    assert [t.r for t in a.trades] == [t.r for t in b.trades] and len(a.trades) == 80


def test_a_gap_restarts_the_windows_and_the_kernel_waits() -> None:
    closes = ["100"] * 14 + ["102.5"] * 30
    s = series(closes)
    for k in range(20, 44):  # a missing candle after 20: a bar without marks
        s.times[k] += 60
    res = run(s, [Entry(T0 + 60 * 12, "", True, D(1), D(100))], MAX_EXEC_PER_HOUR="0")
    assert res.restarts == 1
    assert res.warming == 10  # candles 20 … 29: eleven bars needed again before a decision
    decided = [e.time_s for e in res.trades[0].exits if not e.executed]
    assert all(not (s.times[20] <= t <= s.times[29] + 60) for t in decided)


def test_p33_cooldown_after_an_order() -> None:
    """The stop move fills; the harvest right after it meets P3.3's cooldown, is not spent,
    and goes through once the cooldown and the retry pause have passed."""
    s = series(["100"] * 14 + ["101.7"] * 3 + ["102.5"] * 40)
    res = run(s, [Entry(T0 + 60 * 12, "", True, D(1), D(100))], COOLDOWN_S="600", EXIT_RETRY_S="60")
    steps = [(e.action, e.executed, e.reason) for e in res.trades[0].exits]
    assert steps[:3] == [
        ("UPDATE_SL", True, "ok"),
        ("PARTIAL_25", False, "p33:cooldown_in_flight"),
        ("PARTIAL_25", False, "p33:cooldown_in_flight"),
    ]
    done = next(e for e in res.trades[0].exits if e.action == "PARTIAL_25" and e.executed)
    assert done.time_s - res.trades[0].exits[0].time_s >= 600


def test_a_trailing_stop_is_proposed_moved_and_the_position_exits_at_it() -> None:
    """EXIT_TRAIL_R=2: once in profit the kernel trails its stop 2 R (2 quote units here)
    behind the close; each executed move becomes the replayed stop, and the drop exits there
    (STOP at the trailed 110), where without trailing the remainder rides to the end."""
    closes = ["100"] * 14 + [str(100 + i) for i in range(1, 13)] + ["111.5"] * 3 + ["104"] * 3
    s = series(closes)
    entry = [Entry(T0 + 60 * 12, "", True, D(1), D(100))]
    sets = {"REPLAY_SLIPPAGE": "0", "APPLY_MODE": "testnet", "TESTNET_AUTO_APPROVE": "true"}
    (trailed,) = run(s, entry, EXIT_TRAIL_R="2", **sets).trades
    (plain,) = run(s, entry, **sets).trades
    moves = [e.new_sl for e in trailed.exits if e.action == "UPDATE_SL" and e.executed]
    assert moves[-3:] == [D("108.00"), D("109.00"), D("110.00")]  # the close − 2 R, each move
    last = trailed.exits[-1]
    assert (last.action, last.price, last.time_s) == (engine.STOP, D("110.00"), s.times[-3])
    assert last.qty > 0 and trailed.exits[-1].r > 0
    assert plain.exits[-1].action == engine.END and plain.exits[-1].price == D(104)
    assert all(e.action != "UPDATE_SL" or e.new_sl == D("100.200") for e in plain.exits)
    assert trailed.r > plain.r
