"""The snapshot poller on a real server: one exchange call for every symbol, stale on error."""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal
from typing import Any

import redis

from permitchain.contract.keys import Keys
from permitchain.exchange.sim import DEFAULT_FILTERS, SimExchange
from permitchain.position_brain.poller import FULL_WRITE_EVERY_S, SnapshotPoller
from permitchain.runtime.clock import SystemClock
from tests.position_brain.helpers import CountingExchange

N = 500


def _list_many(r: redis.Redis, keys: Keys, n: int) -> list[str]:
    """n symbols on the simulated exchange, longs and shorts, in one pipeline."""
    syms = [f"S{i:03d}USDT" for i in range(n)]
    pipe = r.pipeline(transaction=False)
    for i, s in enumerate(syms):
        pipe.hset(keys.sim_filters(s), mapping=DEFAULT_FILTERS)
        pipe.sadd(keys.sim_symbols, s)
        amt = f"{'-' if i % 2 else ''}{(i % 50 + 1) / 1000:.3f}"
        pipe.hset(
            keys.sim_position(s), mapping={"amt": amt, "entry_price": "100", "mark_price": "101"}
        )
    pipe.execute()
    return syms


def test_500_symbols_in_one_exchange_call_one_ts(arun: Any, r: redis.Redis, keys: Keys) -> None:
    syms = _list_many(r, keys, N)

    async def body(ar: Any) -> tuple[Any, Any, dict[str, int], float]:
        ex = CountingExchange(SimExchange(ar, keys))
        poller = SnapshotPoller(
            ar, keys, ex, SystemClock(), allow_list=["BTCUSDT"], poll_interval_s=5
        )
        first = await poller.poll_once()  # lists the filters, initialises 500 ledgers
        calls_first = dict(ex.calls)
        started = time.perf_counter()
        second = await poller.poll_once()  # the steady state
        return first, second, calls_first, time.perf_counter() - started

    first, second, calls_first, steady_s = arun(body)
    assert calls_first == {"fetch_positions": 1, "filters": 1}
    assert first.ok and len(first.written) == N and sorted(first.initialised) == syms
    assert first.unknown == ("BTCUSDT",)  # allowlisted, not listed on this exchange
    pipe = r.pipeline(transaction=False)
    for s in syms:
        pipe.hgetall(keys.snapshot(s))
    snaps = pipe.execute()
    assert {h["ts_epoch"] for h in snaps} == {f"{second.ts:.6f}"}  # one poll, one ts
    assert snaps[1]["position_amt"] == "-0.002" and snaps[1]["side"] == "SHORT"
    assert snaps[1]["step_size"] == "0.001" and snaps[1]["source"] == "sim"
    assert all(0 < r.ttl(keys.snapshot(s)) <= 3600 for s in syms[:5])
    assert not r.exists(keys.snapshot("BTCUSDT"))
    inits = [f for _i, f in r.xrange(keys.decisions) if f["decision"] == "LEDGER_INIT"]
    assert len(inits) == N
    print(
        f"\npoll of {N} symbols: first {first.duration_s * 1000:.1f} ms "
        f"(with {N} ledger inits), steady {steady_s * 1000:.1f} ms"
    )
    assert steady_s < 1.0  # POLL_INTERVAL_S is 5; a serial poll would take seconds


def test_a_known_symbol_without_a_position_is_flat_an_error_writes_nothing(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    async def body(ar: Any) -> tuple[Any, Any]:
        sim = SimExchange(ar, keys)
        await sim.list_symbol("ETHUSDT")
        await sim.set_position("BTCUSDT", Decimal("0.062"), Decimal(100))
        poller = SnapshotPoller(
            ar, keys, sim, SystemClock(), allow_list=["ETHUSDT", "BTCUSDT"], poll_interval_s=5
        )
        ok = await poller.poll_once()
        await sim.set_fault(fetch_fail="1")
        await sim.set_position("BTCUSDT", Decimal("0.01"))
        return ok, await poller.poll_once()

    ok, failed = arun(body)
    assert ok.ok and set(ok.written) == {"BTCUSDT", "ETHUSDT"}
    eth = r.hgetall(keys.snapshot("ETHUSDT"))
    assert (eth["position_amt"], eth["side"]) == ("0", "NONE")
    assert not r.exists(keys.ledger("ETHUSDT"))  # no position, nothing to initialise
    assert not failed.ok and failed.written == ()
    btc = r.hgetall(keys.snapshot("BTCUSDT"))
    assert btc["position_amt"] == "0.062"  # the old snapshot, left to go stale: never zeros
    assert btc["ts_epoch"] == f"{ok.ts:.6f}"


def test_a_fill_refreshes_only_its_symbol(arun: Any, r: redis.Redis, keys: Keys) -> None:
    """Between full polls a fill costs one symbol's read: a busy chain never polls in a loop."""
    syms = _list_many(r, keys, 20)

    async def body(ar: Any) -> tuple[Any, Any, list[Any]]:
        ex = CountingExchange(SimExchange(ar, keys))
        poller = SnapshotPoller(ar, keys, ex, SystemClock(), allow_list=[], poll_interval_s=5)
        full = await poller.poll_once()
        poller.request(syms[3])
        assert poller.poll_now.is_set() and poller.dirty == {syms[3]}
        targeted = await poller.poll_once(set(poller.dirty))
        return full, targeted, ex.args

    full, targeted, args = arun(body)
    assert targeted.written == (syms[3],)
    assert args[-1] == [syms[3]]  # the exchange was asked for that one symbol only
    stamps = {s: r.hget(keys.snapshot(s), "ts_epoch") for s in syms}
    assert stamps[syms[3]] == f"{targeted.ts:.6f}"
    assert all(stamps[s] == f"{full.ts:.6f}" for s in syms if s != syms[3])


def test_an_unchanged_position_gets_only_its_new_time(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    """Between whole writes a snapshot the exchange did not change gets its new ts only; a
    change is written whole at once, and a hash that vanished is written whole again."""
    syms = _list_many(r, keys, 3)

    async def body(ar: Any) -> list[Any]:
        poller = SnapshotPoller(
            ar, keys, SimExchange(ar, keys), SystemClock(), allow_list=[], poll_interval_s=5
        )
        first = await poller.poll_once()
        r.hset(keys.snapshot(syms[0]), "entry_price", "marker")  # would survive a ts-only write
        r.hset(keys.sim_position(syms[1]), "amt", "0.7")  # the exchange changed this one
        second = await poller.poll_once()
        got = [first, second, *(r.hgetall(keys.snapshot(s)) for s in syms[:2])]
        r.delete(keys.snapshot(syms[2]))  # gone (an operator, a flush)
        await poller.poll_once()  # the touch sees it gone: written whole in the same poll
        return [*got, r.hgetall(keys.snapshot(syms[2]))]

    first, second, unchanged, changed, rewritten = arun(body)
    assert unchanged["ts_epoch"] == f"{second.ts:.6f}" != f"{first.ts:.6f}"
    assert unchanged["entry_price"] == "marker"  # only the time was written
    assert changed["position_amt"] == "0.7" and changed["ts_epoch"] == f"{second.ts:.6f}"
    assert rewritten["position_amt"] == "0.003" and rewritten["step_size"] == "0.001"
    assert 0 < r.ttl(keys.snapshot(syms[2])) <= 3600


def test_whole_writes_are_spread_over_polls(arun: Any, r: redis.Redis, keys: Keys) -> None:
    """Symbols first written in the same poll are due their next whole write at different
    times (between half of FULL_WRITE_EVERY_S and all of it), so no later poll writes them all
    whole at once; a touched snapshot keeps its whole fields."""
    syms = _list_many(r, keys, 200)

    async def body(ar: Any) -> list[float]:
        poller = SnapshotPoller(
            ar, keys, SimExchange(ar, keys), SystemClock(), allow_list=[], poll_interval_s=5
        )
        start = time.monotonic()
        await poller.poll_once()
        return [poller._whole[s][1] - start for s in syms]

    due = arun(body)
    assert all(FULL_WRITE_EVERY_S / 2 - 1 <= d <= FULL_WRITE_EVERY_S + 1 for d in due)
    # spread: no 5 s poll interval holds more than a fifth of them
    per_poll = Counter(int(d // 5) for d in due)
    assert len(per_poll) >= 6 and max(per_poll.values()) <= 40
