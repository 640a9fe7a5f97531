"""Exit-brain runner: market and position data → proposals, every ``EXIT_INTERVAL_S``.

One cycle (:meth:`ExitBrain.cycle`): one call for the positions and one for the mark prices
of every symbol in ``ALLOW_LIST_SYMBOLS``; one pipelined read of each symbol's position epoch
(P3.3 ledger) and exit state; then per symbol the kernel decides and a proposal is written
with :func:`permitchain.exit_brain.api.submit_proposal`, before the state that records it
(a crash in between re-proposes the same identity, which the planner dedupes).

Marks are bucketed into bars of ``EXIT_BAR_S`` seconds (:class:`market.Bars`), at most
``EXIT_REF_WINDOW + 1`` bars per symbol; a missing mark, a failed read or a bar without any
mark clears the symbol's history, so returns are only ever taken between consecutive bars.
A proposal waits for its outcome: each cycle the exec record of the pending plan is read,
and :func:`kernel.settle` counts it done only when the chain executed it.

Nothing is invented: a held position without a mark or an entry price,
a failed exchange read, a malformed state, a ledger or state key of the wrong Redis type
(``wrong_key_type``) or an epoch that went backwards gives no proposal,
one ``exit_brain_skipped_total{symbol,reason}`` and a log line (the first of a run of equal
skips at WARNING, the rest at DEBUG).

With ``EXCHANGE=sim`` and ``SIM_DRIVE_PRICES=true`` (the default) the service also runs the
sim price driver (:mod:`permitchain.exchange.sim_prices`), seeded by ``SIM_PRICE_SEED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from decimal import Decimal

import redis.exceptions
from prometheus_client import Counter, Gauge

from permitchain.contract.errors import ContractError, ExchangeError, WrongTypeError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal, fmt_decimal
from permitchain.contract.reasons import (
    BAD_STATE,
    EPOCH_REGRESSED,
    FETCH_FAILED,
    NO_ENTRY_PRICE,
    NO_PRICE,
    WARMING_UP,
    WRONG_KEY_TYPE,
)
from permitchain.contract.settings import ExchangeKind, Settings
from permitchain.exchange.base import Exchange, PositionInfo
from permitchain.exchange.factory import make_exchange
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_prices import drive_file, drive_prices
from permitchain.exit_brain import market, state
from permitchain.exit_brain.api import build_proposal, submit_proposal
from permitchain.exit_brain.config import exit_params, exit_windows
from permitchain.exit_brain.kernel import Book, PositionView, decide, settle, to4
from permitchain.runtime.backoff import Backoff
from permitchain.runtime.clock import Clock
from permitchain.runtime.service import RETRYABLE, ServiceRunner, Task
from permitchain.store import AsyncRedis, is_wrong_type

log = logging.getLogger("permitchain.exit_brain")

PROPOSALS = Counter(
    "exit_brain_proposals_total", "Proposals written by the exit brain", ["symbol", "action"]
)
SKIPPED = Counter(
    "exit_brain_skipped_total", "Symbols skipped for missing or bad data", ["symbol", "reason"]
)
OUTCOMES = Counter(
    "exit_brain_outcomes_total",
    "Outcomes of the exit brain's proposals, as the chain decided",
    ["symbol", "action", "outcome"],
)
CYCLES = Counter("exit_brain_cycles_total", "Exit-brain cycles", ["outcome"])
KILL_SCORE = Gauge("exit_brain_kill_score", "Last kill score of the held position", ["symbol"])
R_NET = Gauge("exit_brain_r_net", "Last R_net of the held position", ["symbol"])

FILTER_REFRESH_S = 300.0
SOURCE = "exit-brain"


class ExitBrain:
    def __init__(
        self, r: AsyncRedis, keys: Keys, settings: Settings, clock: Clock, exchange: Exchange
    ) -> None:
        self.redis, self.keys, self.settings, self.clock, self.exchange = (
            r,
            keys,
            settings,
            clock,
            exchange,
        )
        self.symbols = sorted(settings.allow_list)
        self.params = exit_params(settings)
        self.windows = exit_windows(settings)
        self.marks: defaultdict[str, market.Bars] = defaultdict(
            lambda: market.Bars(settings.exit_bar_s, self.windows.ref + 1)
        )
        # After this long without an exec record a proposal's plan can no longer execute.
        self.outcome_timeout_s = (
            settings.proposal_ttl_s + settings.plan_max_age_s + settings.permit_wait_ms / 1000 + 5.0
        )
        self.ticks: dict[str, Decimal] = {}
        self._ticks_at: float | None = None
        self._skipping: dict[str, str] = {}

    # -- one cycle ------------------------------------------------------------------------
    async def cycle(self) -> list[Proposal]:
        """Read, decide and propose once for every watched symbol; returns the proposals."""
        now = self.clock.now()
        try:
            positions = await self.exchange.fetch_positions(self.symbols)
            marks = await self.exchange.mark_prices(self.symbols)
        except ExchangeError as e:
            for s in self.symbols:
                self.marks[s].clear()
                self.skip(s, FETCH_FAILED, str(e))
            return []
        await self.refresh_ticks(now)
        loaded = await state.load(self.redis, self.keys, self.symbols)
        out = []
        for s in self.symbols:
            read = loaded[s]
            if isinstance(read, WrongTypeError):  # that symbol is skipped, naming the key
                self.marks[s].clear()
                self.skip(s, WRONG_KEY_TYPE, str(read))
                continue
            epoch, raw = read
            p = await self.decide_symbol(s, positions.get(s), marks.get(s), epoch, raw, now)
            if p is not None:
                out.append(p)
        return out

    async def decide_symbol(
        self,
        symbol: str,
        pos: PositionInfo | None,
        mark: Decimal | None,
        epoch: int,
        raw: dict[str, str],
        now: float,
    ) -> Proposal | None:
        """Decide for one symbol; write the proposal (and then the state) if there is one."""
        history = self.marks[symbol]
        if mark is not None and mark > 0:
            # bucketed by the mark's own time when the exchange gives one (recorded candles)
            at = pos.mark_time if pos is not None and pos.mark_time is not None else now
            history.add(at, mark)
        else:
            history.clear()
        held = pos is not None and pos.amt != 0
        st, problem = await self.track(
            symbol, pos.side if pos is not None else "NONE", epoch, raw, now
        )
        if pos is None or not held:
            for gauge in (KILL_SCORE, R_NET):
                with contextlib.suppress(KeyError):
                    gauge.remove(symbol)
            return None
        problem = problem or self.data_problem(symbol, pos, mark)
        if problem is not None:
            self.skip(symbol, *problem)
            return None
        assert st is not None and mark is not None  # else track/data_problem gave a reason
        self._skipping.pop(symbol, None)
        is_long = pos.amt > 0
        opened_at = st.opened_at if st.opened_at is not None else now
        book = await self.settle_pending(symbol, st, now)
        if book is None:
            return None  # still waiting for the outcome of the last proposal
        comps = market.components(history.returns, is_long, now - opened_at, self.windows)
        view = PositionView(pos.entry_price, mark, is_long, self.ticks.get(symbol))
        d = decide(view, comps, book, self.params, now)
        KILL_SCORE.labels(symbol).set(float(d.kill_score))
        R_NET.labels(symbol).set(float(d.r_net))
        if not d.proposes:
            return None
        c = d.components
        p = build_proposal(
            symbol,
            d.action,
            kill_score=d.kill_score,
            k_regime_flip=to4(c.regime_flip),
            k_sigma_spike=to4(c.sigma_spike),
            k_ts_drop=to4(c.ts_drop),
            k_age_penalty=to4(c.age_penalty),
            new_sl=d.new_sl,
            r_net=d.r_net,
            position_epoch=d.book.epoch,
            tranche=d.tranche,
            source=SOURCE,
            now=now,
        )
        await submit_proposal(self.redis, self.keys, p, ttl_s=self.settings.proposal_ttl_s)
        await state.save(
            self.redis, self.keys, symbol, state.Stored(d.book, st.side, st.opened_at), now
        )
        PROPOSALS.labels(symbol, d.action.value).inc()
        log.info(
            "[PROPOSAL] symbol=%s action=%s tranche=%d epoch=%d kill_score=%s r_net=%s "
            "new_sl=%s mark=%s entry=%s",
            symbol,
            d.action.value,
            d.tranche,
            d.book.epoch,
            d.kill_score,
            d.r_net,
            fmt_decimal(d.new_sl) if d.new_sl is not None else "-",
            fmt_decimal(mark),
            fmt_decimal(pos.entry_price),
        )
        return p

    async def settle_pending(self, symbol: str, st: state.Stored, now: float) -> Book | None:
        """The book with its pending proposal settled (saved when it changed), or None while
        the outcome is not known yet."""
        plan_id = state.pending_plan_id(symbol, st.book)
        if plan_id is None:
            return st.book
        (exec_state,) = await state.exec_states(self.redis, self.keys, [plan_id])
        executed = state.outcome(exec_state, st.book.pending_since, now, self.outcome_timeout_s)
        if executed is None:
            return None
        book = settle(st.book, executed, now, self.params)
        await state.save(
            self.redis, self.keys, symbol, state.Stored(book, st.side, st.opened_at), now
        )
        OUTCOMES.labels(
            symbol, st.book.pending_action, "executed" if executed else "not_executed"
        ).inc()
        log.info(
            "[OUTCOME] symbol=%s plan_id=%s action=%s tranche=%d executed=%s state=%s",
            symbol,
            plan_id,
            st.book.pending_action,
            st.book.proposals,
            str(executed).lower(),
            exec_state or "none",
        )
        return book

    async def track(
        self, symbol: str, side: str, epoch: int, raw: dict[str, str], now: float
    ) -> tuple[state.Stored | None, tuple[str, str] | None]:
        """The symbol's state for this epoch and side (saved when it changed), or a skip
        reason and detail when it cannot be trusted."""
        try:
            stored = state.parse_state(raw)
        except ContractError as e:
            return None, (BAD_STATE, str(e))
        st = state.advance(stored, epoch, side, now)
        if stored is None and side == "NONE":
            return None, None  # never held: nothing to keep
        if st is None:
            key = self.keys.exit_state(symbol)
            return None, (EPOCH_REGRESSED, f"ledger epoch {epoch} < exit state's; delete {key}")
        if st != stored:
            await state.save(self.redis, self.keys, symbol, st, now)
        return st, None

    def data_problem(
        self, symbol: str, pos: PositionInfo, mark: Decimal | None
    ) -> tuple[str, str] | None:
        """Why the data of a held position is not enough to decide, or None."""
        if mark is None or mark <= 0:
            return NO_PRICE, "no mark price from the exchange"
        if pos.entry_price <= 0:
            return NO_ENTRY_PRICE, "position without an entry price"
        seen = len(self.marks[symbol])
        need = self.windows.min_returns + 1
        if seen < need:
            return WARMING_UP, f"{seen} of {need} consecutive bars of {self.settings.exit_bar_s:g}s"
        return None

    def skip(self, symbol: str, reason: str, detail: str) -> None:
        SKIPPED.labels(symbol, reason).inc()
        first = self._skipping.get(symbol) != reason
        self._skipping[symbol] = reason
        level = logging.INFO if reason == WARMING_UP else logging.WARNING
        log.log(
            level if first else logging.DEBUG,
            "[SKIP] symbol=%s reason=%s %s",
            symbol,
            reason,
            detail,
        )

    async def refresh_ticks(self, now: float) -> None:
        if self._ticks_at is not None and now - self._ticks_at < FILTER_REFRESH_S:
            return
        try:
            filters = await self.exchange.filters(self.symbols)
        except ExchangeError as e:
            log.warning("exit-brain: filters unavailable (%s); stops not rounded to tick", e)
            return
        self.ticks = {s: f.tick_size for s, f in filters.items() if f.tick_size > 0}
        self._ticks_at = now

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Cycle every ``EXIT_INTERVAL_S`` until ``stop``; Redis faults back off and retry."""
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        log.info(
            "exit-brain: watching %s every %.2fs",
            ",".join(self.symbols),
            self.settings.exit_interval_s,
        )
        while not stop.is_set():
            delay = self.settings.exit_interval_s
            try:
                await self.cycle()
                CYCLES.labels("ok").inc()
                backoff.reset()
            except RETRYABLE as e:
                CYCLES.labels("store_error").inc()
                delay = max(delay, backoff.next_delay())
                log.warning("exit-brain: cycle failed (store: %s); retrying in %.2fs", e, delay)
            except redis.exceptions.ResponseError as e:
                if not is_wrong_type(e):
                    raise
                # e.g. the proposal stream holding another type: one line, then a backoff
                CYCLES.labels(WRONG_KEY_TYPE).inc()
                delay = max(delay, backoff.next_delay())
                log.error(
                    "exit-brain: cycle failed: %s: %s; retrying in %.2fs", WRONG_KEY_TYPE, e, delay
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


async def build_exit_brain(
    r: AsyncRedis, keys: Keys, settings: Settings, clock: Clock, port: int
) -> ServiceRunner:
    ex = make_exchange(settings, r, keys)
    brain = ExitBrain(r, keys, settings, clock, ex)
    tasks: list[Task] = [brain.run]
    if settings.exchange is ExchangeKind.SIM and settings.sim_drive_prices:
        sim = ex if isinstance(ex, SimExchange) else SimExchange(r, keys)
        price_file = settings.sim_price_file

        async def sim_file(stop: asyncio.Event) -> None:
            assert price_file is not None
            await drive_file(sim, brain.symbols, price_file, stop, speed=settings.sim_price_speed)

        async def sim_prices(stop: asyncio.Event) -> None:
            await drive_prices(
                sim,
                brain.symbols,
                settings.sim_price_seed,
                stop,
                interval_s=settings.sim_price_interval_s,
            )

        tasks.append(sim_file if price_file is not None else sim_prices)
    return ServiceRunner("exit-brain", r, keys, tasks=tasks, metrics_port=port, on_close=ex.close)
