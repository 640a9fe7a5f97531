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

from permitchain.contract.errors import ConfigError
from permitchain.contract.models import CLOSE_FRACTION, Action
from permitchain.contract.settings import Settings
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
from permitchain.replay.data import Series
from permitchain.replay.entries import Entry, Rule, for_symbol
from permitchain.replay.gate import Gate

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


@dataclass(slots=True)
class _Run:
    """One series' replay in progress."""

    bars: market.Bars
    gate: Gate
    trades: list[Trade] = field(default_factory=list)
    op: _Open | None = None
    due: tuple[Decision, Decimal] | None = None  # executed at a close, fills at the next open
    skipped: int = 0
    restarts: int = 0
    decisions: int = 0
    warming: int = 0
    flips: int = 0
    scores: list[Decimal] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    realised: float = 0.0

    def settle_if_flat(self) -> None:
        if self.op is not None and self.op.qty == 0:
            self.realised += float(self.op.trade.r)
            self.op = None


class _Entries:
    """The entries due, candle by candle, from a rule or a list."""

    def __init__(self, replayer: Replayer, series: Series) -> None:
        self.redis, self.series = replayer, series
        e = replayer.entries
        self.rule = e if isinstance(e, Rule) else None
        self.listed = [] if isinstance(e, Rule) else for_symbol(e, series.symbol)
        self.next = 0
        self.long = True
        # the rule's period of the last entry; data starting mid-period waits for the next
        first = int(series.times[0]) if len(series) else 0
        period = self.rule.period_s if self.rule is not None else 1
        self.slot: int | None = None if first % period == 0 else first // period

    def due(self, i: int) -> Entry | None:
        t = self.series.times[i]
        if self.rule is None:
            entry = None
            while self.next < len(self.listed) and self.listed[self.next].time_s <= t:
                entry = self.listed[self.next]
                self.next += 1
            return entry
        slot = int(t) // self.rule.period_s
        if slot == self.slot:
            return None
        self.slot = slot  # the first candle of a period (a missing one: the next)
        is_long = self.rule.side == "long" or (self.rule.side == "alternate" and self.long)
        price = self.redis.fill_price(self.series.opens[i], is_long, closing=False)
        return Entry(t, self.series.symbol, is_long, self.redis.o.qty, price)

    def taken(self) -> None:
        self.long = not self.long


class Replayer:
    """Replays one series with one set of settings."""

    def __init__(
        self, settings: Settings, options: Options, entries: Rule | Sequence[Entry]
    ) -> None:
        self.settings, self.o = settings, options
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
        s, o = self.settings, self.o
        n, dt = len(series), series.interval_s
        if s.exit_bar_s < dt:
            raise ConfigError(
                f"EXIT_BAR_S={s.exit_bar_s:g} is shorter than the {dt:g}s candles of "
                f"{series.name}: a bar needs at least one candle (--set EXIT_BAR_S={dt:g})"
            )
        times, opens, closes = series.times, series.opens, series.closes
        st = _Run(
            market.Bars(s.exit_bar_s, self.windows.ref + 1),
            Gate(s, series.symbol, o.step_size, o.min_qty),
        )
        entries = _Entries(self, series)
        step_every = max(1, n // 200)
        for i in range(n):
            t = times[i]
            # 1. the plan executed at the previous close fills at this open
            if st.due is not None and st.op is not None:
                d, qty = st.due
                st.due = None
                self.execute(st.op, d, qty, t, opens[i], st.gate)
                st.settle_if_flat()
            # 2. an entry
            entry = entries.due(i)
            if entry is not None:
                if st.op is None:
                    st.op = self.open(entry, t, i, len(st.trades), series.symbol)
                    st.trades.append(st.op.trade)
                    entries.taken()
                else:
                    st.skipped += 1
            # 3. the stop
            if st.op is not None:
                self.stop_step(st, series, i)
            # 4. the bars
            fresh = st.bars.index is None
            if not st.bars.add(t, closes[i]) and not fresh:
                st.restarts += 1
            # 5. the decision at the close
            if st.op is not None:
                self.decide_step(st, closes[i], t + dt)
                st.equity.append(st.realised + float(self.mark_r(st.op, closes[i])))
            else:
                st.equity.append(st.realised)
            if progress is not None and (i + 1) % step_every == 0:
                progress(step_every)
        if st.op is not None:  # the end of the data closes what is left
            price = self.fill_price(closes[-1], st.op.trade.is_long, closing=True)
            self.close_all(st.op, END, times[-1] + dt, price)
            st.settle_if_flat()
            if st.equity:
                st.equity[-1] = st.realised
        for tr in st.trades:
            self.baselines(tr, series)
        return SeriesResult(
            series,
            st.trades,
            st.skipped,
            st.restarts,
            st.decisions,
            st.warming,
            st.scores,
            st.flips,
            st.equity,
        )

    def stop_step(self, st: _Run, series: Series, i: int) -> None:
        """The position's stop fills when the candle reaches it (at a worse open if gapped)."""
        assert st.op is not None
        op, is_long = st.op, st.op.trade.is_long
        o, hit = (
            series.opens[i],
            (series.lows[i] <= op.stop if is_long else series.highs[i] >= op.stop),
        )
        if not hit:
            return
        gapped = o <= op.stop if is_long else o >= op.stop
        price = self.fill_price(o if gapped else op.stop, is_long, closing=True)
        self.close_all(op, STOP, series.times[i], price)
        st.due = None
        st.settle_if_flat()

    def decide_step(self, st: _Run, close: Decimal, now: float) -> None:
        """The kernel decides at the close; a proposal meets the gate."""
        assert st.op is not None
        op, tr = st.op, st.op.trade
        if len(st.bars) < self.windows.min_returns + 1:
            st.warming += 1
            return
        comps = market.components(st.bars.returns, tr.is_long, now - tr.entry_s, self.windows)
        view = PositionView(tr.entry_price, close, tr.is_long, self.o.tick_size)
        d = decide(view, comps, op.book, self.params, now)
        st.decisions += 1
        st.scores.append(d.kill_score)
        st.flips += d.components.regime_flip > 0
        if not d.proposes:
            return
        v = st.gate.judge(d, op.epoch, op.qty if tr.is_long else -op.qty, close, now)
        if v.executed:
            op.book = d.book
            st.due = (d, v.qty)
        else:
            op.book = settle(d.book, False, now, self.params)
            tr.exits.append(self.record(d, now, False, f"{v.layer}:{v.reason}"))

    def close_all(self, op: _Open, action: str, at: float, price: Decimal) -> None:
        """Close what is left outside the chain (the exchange's stop, the end of the data)."""
        qty = op.qty
        pnl, _fee = self.close_part(op, qty, price)
        op.trade.exits.append(
            Exit(
                at,
                action,
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
        self.finish(op, at)

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
    ) -> None:
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
