"""A key of the wrong Redis type is a named reason (``wrong_key_type``), never a crash, a
stall or silence: the planner's sweep skips that one symbol, P3.3 writes a deny naming the
key, an exec record of another type ends the plan blocked with its one result, the ledger
consumer dead-letters the result at once, a stream key of another type is logged by name.
In-process against the real server; the bad-input drill runs the same with the services as
processes (test_bad_input.py)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.exceptions
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from permitchain.apply_layer.exec_store import open_index
from permitchain.apply_layer.planner import plan_from_fields
from permitchain.apply_layer.planner_service import Planner
from permitchain.contract.errors import WrongTypeError
from permitchain.contract.keys import Keys
from permitchain.contract.models import GovernorPermit, Result, ResultStatus, parse_p33
from permitchain.contract.settings import Settings
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.service import ExitBrain
from permitchain.governor.service import Governor
from permitchain.governor.store import utc_day
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.position_brain.state import apply_result
from permitchain.runtime.clock import FixedClock, SystemClock
from permitchain.store import is_wrong_type
from tests.apply_layer.bench import Bench, plan_for
from tests.apply_layer.test_planner import fields
from tests.governor.plans import T0
from tests.governor.plans import plan as gov_plan
from tests.governor.test_store import SYM, gov_settings, seed_snapshot
from tests.position_brain.helpers import brain, plan

#: A value of each Redis type but the hash (how a key is set to it)
NOT_HASH = {
    "string": lambda r, k: r.set(k, "banana"),
    "list": lambda r, k: r.rpush(k, "x"),
    "set": lambda r, k: r.sadd(k, "x"),
    "zset": lambda r, k: r.zadd(k, {"x": 1}),
    "stream": lambda r, k: r.xadd(k, {"x": "1"}),
}


def test_sweep_skips_only_the_proposal_of_the_wrong_type(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    now = time.time()
    r.set(keys.proposal("BTCUSDT"), "banana")
    r.hset(keys.proposal("ETHUSDT"), mapping=fields(symbol="ETHUSDT", ts_epoch=now))
    s = settings.model_copy(update={"allow_list": frozenset({"BTCUSDT", "ETHUSDT"})})

    async def body(ar: Any) -> int:
        return await Planner(ar, keys, s, FixedClock(now)).sweep_once()

    assert arun(body) == 1
    plans = [f for _i, f in r.xrange(keys.plan_stream)]
    assert [(p["symbol"], p["decision"]) for p in plans] == [("ETHUSDT", "EXECUTE")]


@pytest.mark.parametrize("key", ["ledger", "snapshot", "inflight"])
def test_p33_denies_naming_a_key_of_the_wrong_type(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings, key: str
) -> None:
    p = plan(tranche=61)
    r.hset(
        keys.snapshot("BTCUSDT"),
        mapping={
            "position_amt": "1",
            "step_size": "0.001",
            "min_qty": "0.001",
            "ts_epoch": f"{time.time()}",
        },
    )
    r.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "1", "epoch": "0"})
    bad = getattr(keys, key)("BTCUSDT")
    r.delete(bad)
    if key == "inflight":
        r.hset(bad, "x", "1")
    else:
        r.set(bad, "banana")

    async def body(ar: Any) -> None:
        pb, _sim = brain(ar, keys, settings)
        await pb.handle_plan("1-0", p.to_fields())

    arun(body)
    permit = parse_p33(r.get(keys.permit_p33(p.plan_id))).body()
    assert permit["allow"] is False and permit["reason"] == "wrong_key_type"
    held = "hash" if key == "inflight" else "string"
    assert permit["context"] == {
        "key": bad,
        "type": held,
        "expected": "string" if key == "inflight" else "hash",
    }
    assert r.exists(keys.permit_event_stream)  # the executor is woken: no permit_timeout
    audit = [f for _i, f in r.xrange(keys.decisions) if f["plan_id"] == p.plan_id]
    assert [(a["decision"], a["reason"]) for a in audit] == [("DENY", "wrong_key_type")]


@pytest.mark.parametrize("held", sorted(NOT_HASH))
def test_exec_record_of_the_wrong_type_ends_blocked_with_one_result(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings, held: str
) -> None:
    p = plan_for(62)
    NOT_HASH[held](r, keys.exec_record(p.plan_id))

    async def body(ar: Redis) -> Any:
        async with Bench(ar, keys, settings) as b:
            await b.run(p)
            await b.handle(p)  # a redelivery: still one result
            return await b.results(p.plan_id), await b.exec_record(p.plan_id), await b.fills()

    results, record, fills = arun(body)
    assert [(x["status"], x["reason"]) for x in results] == [("blocked", "wrong_key_type")]
    detail = f"key {keys.exec_record(p.plan_id)} is a {held}, expected a hash"
    assert results[0]["error"] == detail
    assert record["state"] == "blocked" and record["detail"] == detail
    assert fills == []


def test_an_expired_plan_over_an_exec_record_of_the_wrong_type_is_blocked(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    """block_plan.lua (the executor's own blocks, e.g. plan_expired) treats it the same way."""
    p = plan_for(63, now=time.time() - 120)
    r.set(keys.exec_record(p.plan_id), "banana")

    async def body(ar: Redis) -> Any:
        async with Bench(ar, keys, settings) as b:
            await b.handle(p)
            return await b.results(p.plan_id)

    assert [(x["status"], x["reason"]) for x in arun(body)] == [("blocked", "wrong_key_type")]


def test_ledger_of_the_wrong_type_is_a_wrong_type_error_naming_it(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    r.rpush(keys.ledger("BTCUSDT"), "x")
    res = Result(
        plan_id="0123456789abcdef",
        symbol="BTCUSDT",
        executed=True,
        status=ResultStatus.FILLED,
        reason="filled",
        order_id="1",
        side="SELL",
        requested_qty=Decimal("0.01"),
        filled_qty=Decimal("0.01"),
        ts=time.time(),
    )

    async def body(ar: Any) -> str:
        with pytest.raises(WrongTypeError) as e:
            await apply_result(ar, keys, res, "1-0")
        return str(e.value)

    assert arun(body) == f"key {keys.ledger('BTCUSDT')} is a list, expected a hash"


@pytest.mark.parametrize("key", ["snapshot", "executions", "reservations", "notional"])
def test_governor_denies_naming_an_input_key_of_the_wrong_type(
    arun: Any, r: redis.Redis, keys: Keys, redis_url: str, prefix: str, key: str
) -> None:
    seed_snapshot(r, keys)
    bad = {
        "snapshot": keys.snapshot(SYM),
        "executions": keys.governor_executions(SYM),
        "reservations": keys.governor_reservations(SYM),
        "notional": keys.governor_notional(utc_day(T0)),
    }[key]
    r.delete(bad)
    r.rpush(bad, "x")
    p = gov_plan(created_at=T0)

    async def body(ar: Any) -> None:
        gov = Governor(ar, keys, gov_settings(redis_url, prefix), FixedClock(T0))
        await gov.handle("1-1", p.to_fields())

    arun(body)
    got = GovernorPermit.from_json(r.get(keys.permit_governor(p.plan_id)) or "")
    assert (got.decision, got.reason) == ("DENY", "wrong_key_type")
    audit = [f for _i, f in r.xrange(keys.decisions) if f["plan_id"] == p.plan_id]
    expected = "hash" if key in ("snapshot", "notional") else "zset"
    assert json.loads(audit[0]["context"])["keys"] == [
        f"key {bad} is a list, expected a {expected}"
    ]


@pytest.mark.parametrize("key", ["ledger", "exit_state"])
def test_exit_brain_skips_only_the_symbol_whose_key_has_the_wrong_type(
    arun: Any, r: redis.Redis, keys: Keys, redis_url: str, prefix: str, key: str
) -> None:
    s = Settings(redis_url=redis_url, key_prefix=prefix, allow_list_symbols="BTCUSDT,ETHUSDT")
    r.zadd(getattr(keys, key)("BTCUSDT"), {"x": 1})
    before = exit_skipped("wrong_key_type")

    async def body(ar: Any) -> Any:
        sim = SimExchange(ar, keys)
        for sym in ("BTCUSDT", "ETHUSDT"):
            await sim.list_symbol(sym, step_size="0.001", min_qty="0.001", tick_size="0.01")
            await sim.set_position(sym, Decimal("0.062"), Decimal(100))
            await sim.set_price(sym, Decimal(100))
        await ExitBrain(ar, keys, s, FixedClock(T0), sim).cycle()
        return await ar.hgetall(keys.exit_state("ETHUSDT"))

    assert arun(body)["epoch"] == "0"  # the other symbol is tracked
    assert exit_skipped("wrong_key_type") - before == 1


def exit_skipped(reason: str) -> float:
    v = REGISTRY.get_sample_value(
        "exit_brain_skipped_total", {"symbol": "BTCUSDT", "reason": reason}
    )
    return v or 0.0


@pytest.mark.parametrize("when", ["first_poll", "later_poll"])
def test_a_snapshot_key_of_the_wrong_type_is_replaced_and_others_still_written(
    arun: Any, r: redis.Redis, keys: Keys, when: str
) -> None:
    """P3.3 alone writes snapshots: a key of another type in a snapshot's place is replaced
    (with a line naming it), on a whole write and on the steady state's time-only touch; the
    other symbols' snapshots are written either way."""
    syms = ("AAAUSDT", "BBBUSDT", "CCCUSDT")

    async def body(ar: Any) -> list[dict[str, str]]:
        sim = SimExchange(ar, keys)
        for sym in syms:
            await sim.list_symbol(sym, step_size="0.001", min_qty="0.001")
            await sim.set_position(sym, Decimal("0.5"), Decimal(100))
        poller = SnapshotPoller(
            ar, keys, sim, SystemClock(), allow_list=list(syms), poll_interval_s=5
        )
        if when == "later_poll":
            await poller.poll_once()
        await ar.delete(keys.snapshot("BBBUSDT"))
        await ar.sadd(keys.snapshot("BBBUSDT"), "x")
        result = await poller.poll_once()
        assert set(result.written) == set(syms)
        return [await ar.hgetall(keys.snapshot(s)) for s in syms]

    snaps = arun(body)
    assert [s["position_amt"] for s in snaps] == ["0.5"] * 3
    assert len({s["ts_epoch"] for s in snaps}) == 1


def test_a_dedupe_key_of_the_wrong_type_is_named_not_a_duplicate(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    """publish_plan.lua: a dedupe key of another type is an error naming it (the runner
    dead-letters the proposal, wrong_key_type), not a plan taken for published; the sweep
    skips that symbol and sweeps the others."""
    now = time.time()
    s = settings.model_copy(update={"allow_list": frozenset({"BTCUSDT", "ETHUSDT"})})
    btc = fields(ts_epoch=now)
    r.hset(keys.proposal("BTCUSDT"), mapping=btc)
    r.hset(keys.proposal("ETHUSDT"), mapping=fields(symbol="ETHUSDT", ts_epoch=now))

    async def body(ar: Any) -> tuple[str, int]:
        planner = Planner(ar, keys, s, FixedClock(now))
        plan_id = plan_from_fields(btc, planner.policy, now)[0].plan_id
        await ar.lpush(keys.dedupe(plan_id), "x")
        with pytest.raises(redis.exceptions.ResponseError) as e:
            await planner.handle("1-0", btc)
        assert is_wrong_type(e.value)
        return str(e.value), await planner.sweep_once()

    error, swept = arun(body)
    assert "is a list, expected a string" in error and ":apply:stream_published:{" in error
    assert swept == 1
    plans = [f for _i, f in r.xrange(keys.plan_stream)]
    assert [p["symbol"] for p in plans] == ["ETHUSDT"]
    audit = [f for _i, f in r.xrange(keys.decisions)]
    assert [a["symbol"] for a in audit] == ["ETHUSDT"]  # no DUPLICATE for BTCUSDT


def test_an_open_index_of_the_wrong_type_blocks_the_plan_before_any_order(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    """The executor's open-executions index holding another type: the move to submitted is
    refused (nothing sent), the plan ends blocked with its one result naming the key, and the
    resolver reads no open plans from it instead of failing."""
    p = plan_for(64)
    r.set(open_index(keys), "banana")

    async def body(ar: Redis) -> Any:
        async with Bench(ar, keys, settings) as b:
            await b.run(p)
            return (
                await b.results(p.plan_id),
                await b.fills(),
                await b.ex.store.open_plans(float("inf")),
            )

    results, fills, still_open = arun(body)
    assert [(x["status"], x["reason"]) for x in results] == [("blocked", "wrong_key_type")]
    assert results[0]["error"] == f"key {open_index(keys)} is a string, expected a zset"
    assert fills == [] and still_open == []
