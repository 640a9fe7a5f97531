"""The exit-brain runner against a real server: sim positions, seeded price paths, cycles
called directly (no sleeps), proposals checked in the hash and on the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from itertools import islice
from typing import Any

import pytest
from prometheus_client import REGISTRY

from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal
from permitchain.contract.settings import Settings
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_prices import VolRegime, price_path
from permitchain.exit_brain.api import expected_plan_id
from permitchain.exit_brain.kernel import Components, kill_score
from permitchain.exit_brain.market import MIN_RETURNS
from permitchain.exit_brain.service import ExitBrain, build_exit_brain
from permitchain.runtime.clock import FixedClock
from permitchain.store import async_client

SYM = "BTCUSDT"
D = Decimal
T0 = 1_700_000_000.0
UP = [VolRegime("up", 0.001, 0.0003)]
LEVELS = {"UPDATE_SL": D("1.5"), "PARTIAL_25": D(2), "PARTIAL_50": D(4), "PARTIAL_75": D(6)}


@pytest.fixture
def one_symbol(redis_url: str, prefix: str) -> Settings:
    # one bar per 2-second cycle, as the tests step the clock
    return Settings(redis_url=redis_url, key_prefix=prefix, allow_list_symbols=SYM, exit_bar_s=2)


def skipped(reason: str, symbol: str = SYM) -> float:
    v = REGISTRY.get_sample_value("exit_brain_skipped_total", {"symbol": symbol, "reason": reason})
    return v or 0.0


def proposed(action: str) -> float:
    v = REGISTRY.get_sample_value("exit_brain_proposals_total", {"symbol": SYM, "action": action})
    return v or 0.0


async def seed(r: Any, keys: Keys, amt: str = "0.062", entry: str | None = "100") -> SimExchange:
    sim = SimExchange(r, keys)
    await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", tick_size="0.01")
    await sim.set_position(SYM, D(amt), D(entry) if entry else None)
    return sim


async def run_path(
    brain: ExitBrain,
    sim: SimExchange,
    clock: FixedClock,
    prices: list[Decimal],
    outcome: str | None = "filled",
) -> list[Proposal]:
    """One cycle per price, 2 s apart. Each proposal's plan gets the exec record state
    ``outcome`` (what the chain's executor writes; None: no record, no outcome yet)."""
    out: list[Proposal] = []
    for p in prices:
        await sim.set_price(SYM, p)
        made = await brain.cycle()
        for proposal in made if outcome else ():
            await brain.redis.hset(
                brain.keys.exec_record(expected_plan_id(proposal)), "state", outcome
            )
        out += made
        clock.advance(2)
    return out


def path(start: Decimal, n: int, seed_: int = 3, regimes: list[VolRegime] = UP) -> list[Decimal]:
    return [
        s.price
        for s in islice(price_path(start, seed_, tick=D("0.01"), regimes=regimes, switch_prob=0), n)
    ]


def test_cycles_harvest_a_rising_long_once_per_epoch(
    arun: Callable[..., Any], keys: Keys, one_symbol: Settings
) -> None:
    warmups_before = skipped("warming_up")
    partial75_before = proposed("PARTIAL_75")
    prices = path(D(100), 112)  # one continuous path: 80 cycles, a restart, 20, reconcile, 12

    async def body(r: Any) -> Any:
        sim = await seed(r, keys)
        clock = FixedClock(T0)
        brain = ExitBrain(r, keys, one_symbol, clock, sim)
        first = await run_path(brain, sim, clock, prices[:80])
        warmups = skipped("warming_up") - warmups_before
        latest = await r.hgetall(keys.proposal(SYM))
        ttl = await r.ttl(keys.proposal(SYM))
        stream = [f for _i, f in await r.xrange(keys.proposal_stream)]
        book = await r.hgetall(keys.exit_state(SYM))
        # a restart (new process, empty memory) re-proposes nothing for the same epoch
        restarted = ExitBrain(r, keys, one_symbol, clock, sim)
        again = await run_path(restarted, sim, clock, prices[80:100])
        # a reconcile starts a new position epoch: the tranches are open again
        await r.hset(keys.ledger(SYM), mapping={"last_known_amt": "0.062", "epoch": "1"})
        after = await run_path(restarted, sim, clock, prices[100:])
        return first, warmups, latest, ttl, stream, book, again, after

    first, warmups, latest, ttl, stream, book, again, after = arun(body)
    assert [(p.action, p.tranche) for p in first] == [
        ("UPDATE_SL", 1),
        ("PARTIAL_25", 2),
        ("PARTIAL_50", 3),
        ("PARTIAL_75", 4),
    ]
    assert warmups == MIN_RETURNS  # 10 marks to warm up, then decisions
    assert proposed("PARTIAL_75") - partial75_before == 2
    # the stream holds exactly the proposals, field for field; the hash the latest
    assert stream == [p.to_fields() for p in first]
    assert latest == first[-1].to_fields() and 0 < ttl <= one_symbol.proposal_ttl_s
    for f in stream:
        p = Proposal.from_fields(f)
        assert p.source == "exit-brain" and p.position_epoch == 0
        comps = Components(
            *(float(x) for x in (p.k_regime_flip, p.k_sigma_spike, p.k_ts_drop, p.k_age_penalty))
        )
        assert kill_score(comps) == p.kill_score < one_symbol.full_close_score
        assert p.r_net is not None and p.r_net >= LEVELS[p.action]
    sl, p25, _p50, p75 = first
    assert sl.new_sl == D("100.2") and p25.new_sl is None  # the stop moved once, not again
    assert len({expected_plan_id(p) for p in first}) == 4
    assert book["epoch"] == "0" and book["tranches_done"] == "3" and book["stop"] == "100.2"
    assert again == []
    assert [(p.action, p.tranche, p.position_epoch, p.new_sl) for p in after] == [
        ("PARTIAL_75", 1, 1, D("100.2"))
    ]
    assert expected_plan_id(after[0]) != expected_plan_id(p75)


def test_choppy_market_proposes_a_full_close(
    arun: Callable[..., Any], keys: Keys, one_symbol: Settings
) -> None:
    """A calm market that turns choppy: the regime flips and the volatility jumps."""
    calm, chop = [VolRegime("calm", 0.0, 0.0005)], [VolRegime("chop", 0.0, 0.004)]
    prices = path(D(100), 60, seed_=8, regimes=calm)
    prices += path(prices[-1], 40, seed_=8, regimes=chop)

    async def body(r: Any) -> list[Proposal]:
        sim = await seed(r, keys)
        clock = FixedClock(T0)
        brain = ExitBrain(r, keys, one_symbol, clock, sim)
        return await run_path(brain, sim, clock, prices)

    made = arun(body)
    closes = [p for p in made if p.action == "FULL_CLOSE_PROPOSED"]
    assert [p.tranche for p in made] == list(range(1, len(made) + 1)) and closes
    first = closes[0]
    assert first.kill_score >= one_symbol.full_close_score and first.new_sl is None
    assert first.k_sigma_spike > 0  # a flip and a trend drop alone stay below 0.78


def test_a_flip_alone_no_longer_closes(
    arun: Callable[..., Any], keys: Keys, one_symbol: Settings
) -> None:
    """Steady noise without a volatility change: the flip fires on some windows, the
    default FULL_CLOSE_SCORE (0.78) is above a flip with the full trend drop (0.7773)."""
    chop = [VolRegime("chop", 0.0, 0.003)]

    async def body(r: Any) -> list[Proposal]:
        sim = await seed(r, keys)
        clock = FixedClock(T0)
        brain = ExitBrain(r, keys, one_symbol, clock, sim)
        return await run_path(brain, sim, clock, path(D(100), 40, seed_=8, regimes=chop))

    assert [p for p in arun(body) if p.action == "FULL_CLOSE_PROPOSED"] == []


def test_only_executed_plans_spend_their_tranche(
    arun: Callable[..., Any], keys: Keys, one_symbol: Settings
) -> None:
    """Without an outcome the exit brain waits; a blocked plan leaves the tranche available
    and it is proposed again, as a new plan, after EXIT_RETRY_S."""
    prices = [D(100)] * 12 + [D("102.5")] * 40  # R 2.5: PARTIAL_25 with the stop move

    async def body(r: Any) -> Any:
        sim = await seed(r, keys)
        clock = FixedClock(T0)
        brain = ExitBrain(r, keys, one_symbol, clock, sim)
        waiting = await run_path(brain, sim, clock, prices[:20], outcome=None)
        pending = await r.hgetall(keys.exit_state(SYM))
        await r.hset(keys.exec_record(expected_plan_id(waiting[0])), "state", "blocked")
        retried = await run_path(brain, sim, clock, prices[20:], outcome="filled")
        return waiting, pending, retried, await r.hgetall(keys.exit_state(SYM))

    waiting, pending, retried, book = arun(body)
    assert [(p.action, p.tranche) for p in waiting] == [("PARTIAL_25", 1)]  # then it waits
    assert pending["pending_action"] == "PARTIAL_25" and pending["tranches_done"] == "0"
    assert [(p.action, p.tranche, p.new_sl) for p in retried] == [("PARTIAL_25", 2, D("100.2"))]
    gap = retried[0].ts_epoch - (T0 + 2 * 20)  # blocked seen at the first cycle of the retry
    assert gap >= one_symbol.exit_retry_s
    assert book["tranches_done"] == "1" and book["stop"] == "100.2" and book["pending_action"] == ""


def test_missing_prices_give_no_proposal_and_count_skips(
    arun: Callable[..., Any], keys: Keys, one_symbol: Settings
) -> None:
    before = skipped("no_price")
    failed_before = skipped("fetch_failed")

    async def body(r: Any) -> Any:
        sim = await seed(r, keys, entry=None)  # a position, but neither entry nor mark price
        brain = ExitBrain(r, keys, one_symbol, FixedClock(T0), sim)
        out = [await brain.cycle() for _ in range(3)]
        await sim.set_fault(fetch_fail="1")  # the exchange stops answering
        out += [await brain.cycle() for _ in range(2)]
        return out, await r.xlen(keys.proposal_stream), await r.exists(keys.proposal(SYM))

    out, stream_len, hash_exists = arun(body)
    assert out == [[]] * 5 and stream_len == 0 and hash_exists == 0
    assert skipped("no_price") - before == 3
    assert skipped("fetch_failed") - failed_before == 2


def test_a_gap_in_marks_restarts_the_warm_up(
    arun: Callable[..., Any], keys: Keys, one_symbol: Settings
) -> None:
    async def body(r: Any) -> Any:
        sim = await seed(r, keys)
        clock = FixedClock(T0)
        brain = ExitBrain(r, keys, one_symbol, clock, sim)
        await run_path(brain, sim, clock, path(D(107), 8))
        await sim.set_fault(fetch_fail="1")
        await brain.cycle()
        await sim.clear_faults()
        rest = path(D(107), MIN_RETURNS + 1)
        warm = await run_path(brain, sim, clock, rest[:-1])
        ready = await run_path(brain, sim, clock, rest[-1:])
        return warm, ready

    warm, ready = arun(body)
    assert warm == []  # ten fresh marks are not yet enough after the gap
    assert [p.action for p in ready] == ["PARTIAL_75"]


@pytest.mark.parametrize(("drive", "tasks"), [(True, 2), (False, 1)])
def test_build_runs_the_price_driver_only_when_asked(
    redis_url: str, prefix: str, drive: bool, tasks: int
) -> None:
    s = Settings(redis_url=redis_url, key_prefix=prefix, sim_drive_prices=drive)

    async def body() -> int:
        runner = await build_exit_brain(async_client(redis_url), Keys(prefix), s, FixedClock(T0), 0)
        try:
            return len(runner.tasks)
        finally:
            await runner.redis.aclose()

    assert asyncio.run(body()) == tasks
