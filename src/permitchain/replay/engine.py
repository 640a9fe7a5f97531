"""The replay: candles in time order through the exit brain's own code and the gate.

Per candle (open time ``t``, interval ``dt``):

1. a plan executed at the previous candle's close fills at this candle's **open**, with
   ``REPLAY_SLIPPAGE`` against the trader; its outcome settles the book
   (:func:`~permitchain.exit_brain.kernel.settle`), the gate records the order;
2. an entry due at ``t`` opens a position at the open (skipped while one is open), with the
   initial stop 1 R away (``EXIT_RISK_FRACTION``) as the kernel assumes;
3. the position's stop (initial, or the last one executed) fills when the candle's low
   (high, for a short) reaches it: at the stop, or at the open when the candle opened
   beyond it;
4. the close enters the bars (:class:`~permitchain.exit_brain.market.Bars`, at ``t``: the
   bar of the candle), a gap in the bars restarts the windows;
5. at the close (``t + dt``) the kernel decides, exactly as the live service does (no
   decision until ``EXIT_SHORT_WINDOW / 2 + 1`` bars are there), and a proposal meets the
   gate (:mod:`.gate`): executed → it fills at the next open; not executed → the book
   settles as not executed (retry pause).

Money: ``Decimal``; fees ``EXIT_FEE_RATE`` per side on each fill's notional; a trade's R is
its net PnL over its initial risk (entry × ``EXIT_RISK_FRACTION`` × quantity). A position
still open at the last candle is closed there (``END``) at the close, with slippage and
fees, so every trade ends and totals compare like with like. The equity curve (R, summed
over trades, at each close) is float: it is for the drawdown and the plot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from permitchain.errors import ConfigError
from permitchain.exit_brain import market
from permitchain.exit_brain.config import exit_params, exit_windows
from permitchain.exit_brain.kernel import (
    Book,
    Decision,
    PositionView,
    decide,
    initial_stop,
    settle,
)
from permitchain.models import CLOSE_FRACTION, Action
from permitchain.replay.data import Series
from permitchain.replay.entries import Entry, Rule, for_symbol
from permitchain.replay.gate import Gate
from permitchain.settings import Settings

FOUR = Decimal("0.0001")
STOP = "STOP"  # the exchange's stop filled (outside the chain)
END = "END"  # closed at the last candle (end of the data)


@dataclass(frozen=True, slots=True)
class Options:
    """The replay's own settings (``--set REPLAY_…``)."""

    qty: Decimal = Decimal(1)  # REPLAY_QTY: quantity of a rule entry
    step_size: Decimal = Decimal("0.001")  # REPLAY_STEP_SIZE
    min_qty: Decimal = Decimal("0.001")  # REPLAY_MIN_QTY
    tick_size: Decimal | None = None  # REPLAY_TICK_SIZE (stops rounded to it)
    slippage: Decimal = Decimal("0.0005")  # REPLAY_SLIPPAGE: fraction against the trader
    baseline_stop_r: Decimal = Decimal(1)  # REPLAY_BASELINE_STOP_R
    baseline_take_r: Decimal = Decimal(2)  # REPLAY_BASELINE_TAKE_R


NAMES = {
    "REPLAY_QTY": "qty",
    "REPLAY_STEP_SIZE": "step_size",
    "REPLAY_MIN_QTY": "min_qty",
    "REPLAY_TICK_SIZE": "tick_size",
    "REPLAY_SLIPPAGE": "slippage",
    "REPLAY_BASELINE_STOP_R": "baseline_stop_r",
    "REPLAY_BASELINE_TAKE_R": "baseline_take_r",
}


@dataclass(frozen=True, slots=True)
class Exit:
    time_s: float
    action: str  # PARTIAL_25 … FULL_CLOSE_PROPOSED, UPDATE_SL, STOP, END
    tranche: int
    kill_score: Decimal | None
    components: tuple[float, float, float, float] | None
    r_net: Decimal | None  # the kernel's R_net at the decision
    executed: bool
    reason: str  # "ok", or layer:reason when the gate did not execute it
    qty: Decimal = Decimal(0)
    price: Decimal | None = None
    new_sl: Decimal | None = None
    pnl: Decimal = Decimal(0)
    r: Decimal = Decimal(0)


@dataclass(slots=True)
class Trade:
    symbol: str
    is_long: bool
    entry_s: float
    entry_price: Decimal
    qty: Decimal
    entry_index: int
    exits: list[Exit] = field(default_factory=list)
    end_s: float = 0.0
    pnl: Decimal = Decimal(0)  # net of all fees
    fees: Decimal = Decimal(0)
    r: Decimal = Decimal(0)
    hold_r: Decimal = Decimal(0)
    hold_pnl: Decimal = Decimal(0)
    base_r: Decimal = Decimal(0)
    base_pnl: Decimal = Decimal(0)
    risk: Decimal = Decimal(1)  # the initial risk in quote currency: entry × fraction × qty


@dataclass(slots=True)
class SeriesResult:
    series: Series
    trades: list[Trade]
    skipped_entries: int
    restarts: int  # times the bars restarted after a gap
    decisions: int
    warming: int  # bars in a position without enough history to decide
    kill_scores: list[Decimal]
    flips: int
    equity: list[float]  # R at each candle's close, summed over trades


@dataclass(slots=True)
class _Open:
    trade: Trade
    qty: Decimal
    stop: Decimal
    book: Book
    epoch: int


def _q(d: Decimal) -> Decimal:
    return d.quantize(FOUR, rounding=ROUND_HALF_EVEN)


class Replayer:
    """Replays one series with one set of settings."""

    def __init__(
        self, settings: Settings, options: Options, entries: Rule | Sequence[Entry]
    ) -> None:
        self.s, self.o = settings, options
        self.params = exit_params(settings)
        self.windows = exit_windows(settings)
        self.entries = entries
        self.fee = settings.exit_fee_rate
        self.risk = settings.exit_risk_fraction
        self.slip = options.slippage

    # -- fills ------------------------------------------------------------------------------
    def fill_price(self, price: Decimal, is_long: bool, closing: bool) -> Decimal:
        """Slippage against the trader: a sell (closing a long, opening a short) lower."""
        sell = is_long == closing
        return price * (1 - self.slip) if sell else price * (1 + self.slip)

    def close_part(self, op: _Open, qty: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
        """Close ``qty`` at ``price`` (already slipped): (pnl net of the exit fee, that fee)."""
        t = op.trade
        move = (price - t.entry_price) if t.is_long else (t.entry_price - price)
        fee = self.fee * price * qty
        pnl = move * qty - fee
        op.qty -= qty
        t.pnl += pnl
        t.fees += fee
        return pnl, fee

    def run(self, series: Series, progress: Callable[[int], None] | None = None) -> SeriesResult:
        s, o = self.s, self.o
        n = len(series)
        times, opens, highs, lows, closes = (
            series.times,
            series.opens,
            series.highs,
            series.lows,
            series.closes,
        )
        dt = series.interval_s
        if s.exit_bar_s < dt:
            raise ConfigError(
                f"EXIT_BAR_S={s.exit_bar_s:g} is shorter than the {dt:g}s candles of "
                f"{series.name}: a bar needs at least one candle (--set EXIT_BAR_S={dt:g})"
            )
        bars = market.Bars(s.exit_bar_s, self.windows.ref + 1)
        need = self.windows.min_returns + 1
        gate = Gate(s, series.symbol, o.step_size, o.min_qty)
        rule = self.entries if isinstance(self.entries, Rule) else None
        listed = [] if rule is not None else for_symbol(self.entries, series.symbol)  # type: ignore[arg-type]
        li = 0
        # the rule's period of the last entry; data starting mid-period waits for the next
        first = int(times[0]) if n else 0
        last_slot = None if rule is None or first % rule.period_s == 0 else first // rule.period_s
        alternate_long = True
        trades: list[Trade] = []
        op: _Open | None = None
        due: tuple[Decision, Decimal] | None = None  # executed at the close, fills at next open
        skipped = restarts = decisions = warming = flips = 0
        scores: list[Decimal] = []
        equity: list[float] = []
        realised = 0.0
        step_every = max(1, n // 200)
        for i in range(n):
            t = times[i]
            # 1. the plan executed at the previous close fills at this open
            if due is not None and op is not None:
                d, qty = due
                due = None
                op = self.execute(op, d, qty, t, opens[i], gate)
                if op.qty == 0:
                    realised += float(op.trade.r)
                    op = None
            # 2. entries
            entry = None
            if rule is not None:
                slot = int(t) // rule.period_s
                if slot != last_slot:  # the first candle of a period (a missing one: the next)
                    is_long = rule.side == "long" or (rule.side == "alternate" and alternate_long)
                    last_slot = slot
                    entry = Entry(
                        t,
                        series.symbol,
                        is_long,
                        o.qty,
                        self.fill_price(opens[i], is_long, closing=False),
                    )
            else:
                while li < len(listed) and listed[li].time_s <= t:
                    entry = listed[li]
                    li += 1
            if entry is not None:
                if op is None:
                    op = self.open(entry, t, i, len(trades), series.symbol)
                    trades.append(op.trade)
                    alternate_long = not alternate_long
                else:
                    skipped += 1
            # 3. the stop
            if op is not None:
                is_long = op.trade.is_long
                hit = lows[i] <= op.stop if is_long else highs[i] >= op.stop
                if hit:
                    gapped = opens[i] <= op.stop if is_long else opens[i] >= op.stop
                    level = opens[i] if gapped else op.stop
                    price = self.fill_price(level, is_long, closing=True)
                    qty = op.qty
                    pnl, _fee = self.close_part(op, qty, price)
                    op.trade.exits.append(
                        Exit(
                            t,
                            STOP,
                            0,
                            None,
                            None,
                            None,
                            True,
                            "ok",
                            qty,
                            price,
                            None,
                            _q(pnl),
                            self.r_of(op, pnl),
                        )
                    )
                    self.finish(op, t)
                    realised += float(op.trade.r)
                    op = None
                    due = None
            # 4. bars
            c = closes[i]
            fresh = bars.index is None
            if not bars.add(t, c) and not fresh:
                restarts += 1
            # 5. decide at the close
            now = t + dt
            if op is not None:
                tr = op.trade
                if len(bars) < need:
                    warming += 1
                else:
                    comps = market.components(
                        bars.returns, tr.is_long, now - tr.entry_s, self.windows
                    )
                    view = PositionView(tr.entry_price, c, tr.is_long, o.tick_size)
                    d = decide(view, comps, op.book, self.params, now)
                    decisions += 1
                    scores.append(d.kill_score)
                    flips += d.components.regime_flip > 0
                    if d.proposes:
                        amt = op.qty if tr.is_long else -op.qty
                        v = gate.judge(d, op.epoch, amt, c, now)
                        if v.executed:
                            op.book = d.book
                            due = (d, v.qty)
                        else:
                            op.book = settle(d.book, False, now, self.params)
                            tr.exits.append(self.record(d, now, False, f"{v.layer}:{v.reason}"))
                unreal = float(self.mark_r(op, c))
                equity.append(realised + unreal)
            else:
                equity.append(realised)
            if progress is not None and (i + 1) % step_every == 0:
                progress(step_every)
        if op is not None:  # the end of the data closes what is left
            last = n - 1
            price = self.fill_price(closes[last], op.trade.is_long, closing=True)
            qty = op.qty
            pnl, _fee = self.close_part(op, qty, price)
            end_s = times[last] + dt
            op.trade.exits.append(
                Exit(
                    end_s,
                    END,
                    0,
                    None,
                    None,
                    None,
                    True,
                    "ok",
                    qty,
                    price,
                    None,
                    _q(pnl),
                    self.r_of(op, pnl),
                )
            )
            self.finish(op, end_s)
            realised += float(op.trade.r)
            if equity:
                equity[-1] = realised
        for tr in trades:
            self.baselines(tr, series)
        return SeriesResult(
            series, trades, skipped, restarts, decisions, warming, scores, flips, equity
        )

    # -- positions --------------------------------------------------------------------------
    def open(self, e: Entry, t: float, i: int, number: int, symbol: str) -> _Open:
        tr = Trade(symbol, e.is_long, t, e.price, e.qty, i)
        tr.risk = e.price * self.risk * e.qty
        fee = self.fee * e.price * e.qty
        tr.fees += fee
        tr.pnl -= fee
        stop = initial_stop(e.price, e.is_long, self.risk)
        return _Open(tr, e.qty, stop, Book(epoch=number), number)

    def r_of(self, op: _Open, pnl: Decimal) -> Decimal:
        return _q(pnl / op.trade.risk)

    def mark_r(self, op: _Open, mark: Decimal) -> Decimal:
        t = op.trade
        move = (mark - t.entry_price) if t.is_long else (t.entry_price - mark)
        return (t.pnl + move * op.qty) / t.risk

    def finish(self, op: _Open, end_s: float) -> None:
        t = op.trade
        t.end_s = end_s
        t.r = _q(t.pnl / t.risk)

    def record(
        self,
        d: Decision,
        now: float,
        executed: bool,
        reason: str,
        qty: Decimal = Decimal(0),
        price: Decimal | None = None,
        pnl: Decimal = Decimal(0),
        r: Decimal = Decimal(0),
    ) -> Exit:
        return Exit(
            now,
            d.action.value,
            d.tranche,
            d.kill_score,
            d.components.as_tuple(),
            d.r_net,
            executed,
            reason,
            qty,
            price,
            d.new_sl,
            pnl,
            r,
        )

    def execute(
        self, op: _Open, d: Decision, qty: Decimal, t: float, open_price: Decimal, gate: Gate
    ) -> _Open:
        """The executed plan fills at ``open_price``: the close (if any), then the stop."""
        gate.record(t)
        op.book = settle(op.book, True, t, self.params)
        action = d.action
        if action in CLOSE_FRACTION:
            qty = min(qty, op.qty)
            price = self.fill_price(open_price, op.trade.is_long, closing=True)
            pnl, _fee = self.close_part(op, qty, price)
            op.trade.exits.append(
                self.record(d, t, True, "ok", qty, price, _q(pnl), self.r_of(op, pnl))
            )
        else:
            op.trade.exits.append(self.record(d, t, True, "ok", qty))
        if d.new_sl is not None and action is not Action.FULL_CLOSE_PROPOSED:
            op.stop = d.new_sl
        if op.qty == 0:
            self.finish(op, t)
        return op

    # -- baselines --------------------------------------------------------------------------
    def baselines(self, tr: Trade, series: Series) -> None:
        """Hold to the end of the data; a fixed stop / take-profit (``REPLAY_BASELINE_*``)."""
        is_long, e, q = tr.is_long, tr.entry_price, tr.qty
        entry_fee = self.fee * e * q

        def pnl_at(level: Decimal) -> Decimal:
            price = self.fill_price(level, is_long, closing=True)
            move = (price - e) if is_long else (e - price)
            return move * q - self.fee * price * q - entry_fee

        last = len(series) - 1
        hold = pnl_at(series.closes[last])
        risk = e * self.risk
        d = 1 if is_long else -1
        stop = e - d * risk * self.o.baseline_stop_r
        take = e + d * risk * self.o.baseline_take_r
        base = None
        for j in range(tr.entry_index, last + 1):
            lo, hi, op_ = series.lows[j], series.highs[j], series.opens[j]
            if (lo <= stop) if is_long else (hi >= stop):  # the stop first when both
                gapped = (op_ <= stop) if is_long else (op_ >= stop)
                base = pnl_at(op_ if gapped else stop)
                break
            if (hi >= take) if is_long else (lo <= take):
                gapped = (op_ >= take) if is_long else (op_ <= take)
                base = pnl_at(op_ if gapped and j > tr.entry_index else take)
                break
        if base is None:
            base = hold
        tr.hold_pnl, tr.base_pnl = hold, base
        tr.hold_r, tr.base_r = _q(hold / tr.risk), _q(base / tr.risk)
