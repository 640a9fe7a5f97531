"""The shadow ledger: signed amounts, confirmed fills only, each plan's result applied once."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import redis

from permitchain.contract.keys import Keys
from permitchain.contract.models import Result
from permitchain.contract.settings import Settings
from permitchain.contract.snapshot import parse_ledger
from permitchain.position_brain import state as state_mod
from permitchain.position_brain.state import (
    APPLIED_PLANS_MAX,
    APPLIED_PLANS_TTL_S,
    APPLIED_PRUNE_SLACK,
    LEDGER_OTHER_FIELDS,
    applied_field,
    apply_result,
    init_ledgers,
    ledger_update,
)
from tests.position_brain.helpers import brain, plan, result, running

D = Decimal
LEDGER = {"last_known_amt": "0.062", "last_known_side": "LONG", "epoch": "0"}


# -- the rules (pure) ------------------------------------------------------------------------
def test_a_sell_fill_reduces_a_long_and_a_buy_fill_reduces_a_short() -> None:
    ch = ledger_update(LEDGER, result(plan(), filled="0.046"), "1-0", time.time())
    assert ch.applied and ch.after == D("0.016") and ch.update is not None
    assert ch.update["last_known_amt"] == "0.016" and ch.update["last_known_side"] == "LONG"
    short = {**LEDGER, "last_known_amt": "-0.062"}
    ch = ledger_update(short, result(plan(), side="BUY", filled="0.062"), "1-0", time.time())
    assert ch.after == 0 and ch.update is not None and ch.update["last_known_side"] == "NONE"


def test_only_confirmed_fills_change_the_amount() -> None:
    p = plan()
    for status in ("unknown", "rejected"):  # an order was sent: cooldown clock, no amount
        ch = ledger_update(LEDGER, result(p, status, filled="0.046", ts=123.0), "1-0", 200.0)
        assert ch.applied and ch.after == D("0.062") and ch.update is not None
        assert "last_known_amt" not in ch.update
        assert ch.update["last_order_time_epoch"] == "123.000000"
    for status in ("blocked", "dry_run"):  # nothing reached the exchange: nothing written
        ch = ledger_update(LEDGER, result(p, status), "1-0", 200.0)
        assert not ch.applied and ch.update is None
    ch = ledger_update(LEDGER, result(p, "partially_filled", filled="0.01"), "1-0", 200.0)
    assert ch.after == D("0.052")


def test_a_plan_already_applied_is_not_applied_again() -> None:
    now = time.time()
    p, other = plan(), plan(tranche=2)
    h = {**LEDGER, applied_field(p.plan_id): f"{now - 5:.6f}"}
    ch = ledger_update(h, result(p), "9-0", now)
    assert (ch.applied, ch.reason, ch.update) == (False, "duplicate_plan", None)
    ch = ledger_update(h, result(other), "9-0", now)
    assert ch.update is not None and ch.update[applied_field(other.plan_id)] == f"{now:.6f}"
    # one mark per plan: applying a result rewrites no list of the plans before it
    assert not any(f.startswith("applied") and f != applied_field(other.plan_id) for f in ch.update)


def test_an_earlier_versions_applied_plans_json_is_still_honoured() -> None:
    p, other = plan(), plan(tranche=3)
    legacy = {**LEDGER, "applied_plans": json.dumps({p.plan_id: time.time() - 5})}
    ch = ledger_update(legacy, result(p), "9-0", time.time())
    assert (ch.applied, ch.reason) == (False, "duplicate_plan")
    assert ledger_update(legacy, result(other), "9-0", time.time()).applied
    garbled = {**LEDGER, "applied_plans": p.plan_id + "{not json"}  # unreadable: not applied
    assert ledger_update(garbled, result(p), "9-0", time.time()).applied


def test_the_cooldown_clock_never_goes_backwards() -> None:
    h = {**LEDGER, "last_order_time_epoch": "500.0", "last_order_id": "7"}
    ch = ledger_update(h, result(plan(), ts=400.0), "1-0", 600.0)
    assert ch.update is not None and "last_order_time_epoch" not in ch.update


# -- on a real server ------------------------------------------------------------------------
def _fields(r: redis.Redis, keys: Keys, symbol: str = "BTCUSDT") -> dict[str, Any]:
    return r.hgetall(keys.ledger(symbol))  # type: ignore[return-value]


def test_the_same_result_twice_and_the_same_plan_under_a_new_id_apply_once(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings, redis_url: str
) -> None:
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)
    p, other = plan(), plan(tranche=1)
    fill, fill2 = result(p, filled="0.046").to_fields(), result(other, filled="0.006").to_fields()

    async def body(ar: Any) -> None:
        pb, _sim = brain(ar, keys, settings)
        # the handler called twice with one entry id (a redelivery)
        await pb.handle_result("1-1", fill)
        await pb.handle_result("1-1", fill)
        async with running(pb, redis_url, poller=False):
            # the same plan's result under two new stream ids, then another plan's result
            await ar.xadd(keys.result_stream, fill)
            await ar.xadd(keys.result_stream, fill)
            sentinel = await ar.xadd(keys.result_stream, fill2)
            await _wait_applied(ar, keys, other.plan_id, sentinel)

    arun(body)
    led = _fields(r, keys)
    assert led["last_known_amt"] == "0.01"  # 0.062 − 0.046 − 0.006, the first fill once
    assert {f for f in led if f.startswith("applied")} == {
        applied_field(p.plan_id),
        applied_field(other.plan_id),
    }
    applies = [f for _i, f in r.xrange(keys.decisions) if f["decision"] == "LEDGER_APPLY"]
    assert [a["plan_id"] for a in applies] == [p.plan_id, other.plan_id]
    pending = r.xpending(keys.result_stream, "p33-ledger")
    assert pending["pending"] == 0


async def _wait_applied(ar: Any, keys: Keys, plan_id: str, after: str) -> None:
    """Until the p33-ledger group has acked ``after`` (stream + group state, no fixed sleep)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        groups = await ar.xinfo_groups(keys.result_stream)
        g = next(g for g in groups if g["name"] == "p33-ledger")
        if g["last-delivered-id"] == after and g["pending"] == 0:
            return
        await ar.xread({keys.decisions: "$"}, block=100)
    raise TimeoutError(f"result of {plan_id} not applied")


def test_applied_plan_marks_are_pruned_to_the_newest_and_legacy_marks_still_count(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    now = time.time()
    n = APPLIED_PLANS_MAX + APPLIED_PRUNE_SLACK + LEDGER_OTHER_FIELDS
    marks = {applied_field(f"old{i}"): f"{now - 1000 + i:.6f}" for i in range(n)}
    marks[applied_field("expired")] = f"{now - APPLIED_PLANS_TTL_S - 1:.6f}"
    legacy = plan(tranche=7)
    r.hset(
        keys.ledger("BTCUSDT"),
        mapping={**LEDGER, **marks, "applied_plans": json.dumps({legacy.plan_id: now - 10})},
    )
    fresh = result(plan(), filled="0.002")

    async def body(ar: Any) -> tuple[bool, bool]:
        again = await apply_result(ar, keys, Result.from_fields(result(legacy).to_fields()), "1-0")
        ch = await apply_result(ar, keys, Result.from_fields(fresh.to_fields()), "2-0")
        return again.applied, ch.applied

    assert arun(body) == (False, True)
    led = _fields(r, keys)
    kept = {f for f in led if f.startswith("applied:")}
    # the first apply (a duplicate) found the hash over the limit and pruned it to the newest
    # APPLIED_PLANS_MAX; the second added its own mark
    assert len(kept) == APPLIED_PLANS_MAX + 1
    assert applied_field(fresh.plan_id) in kept and applied_field("expired") not in kept
    assert applied_field("old0") not in kept and applied_field(f"old{n - 1}") in kept
    assert led["last_known_amt"] == "0.06"


def test_concurrent_deliveries_of_one_plan_apply_once(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)
    res = Result.from_fields(result(plan(), filled="0.002").to_fields())

    async def body(ar: Any) -> list[bool]:
        changes = await asyncio.gather(*(apply_result(ar, keys, res, f"{i}-0") for i in range(20)))
        return [c.applied for c in changes]

    assert sorted(arun(body)) == [False] * 19 + [True]
    assert _fields(r, keys)["last_known_amt"] == "0.06"


def test_new_or_rejected_results_do_not_change_the_amount(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)

    async def body(ar: Any) -> None:
        pb, _sim = brain(ar, keys, settings)
        # an order accepted but never filled (executor: unknown, 0 filled), a rejection, a block
        for i, status in enumerate(("unknown", "rejected", "blocked")):
            await pb.handle_result(f"{i + 1}-0", result(plan(tranche=i), status).to_fields())

    arun(body)
    led = _fields(r, keys)
    assert led["last_known_amt"] == "0.062"
    assert float(led["last_order_time_epoch"]) > time.time() - 60  # the cooldown started
    assert parse_ledger(led) is not None


def test_a_missing_ledger_is_initialised_once_with_an_audit_entry(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    async def body(ar: Any) -> tuple[list[str], list[str]]:
        first = await init_ledgers(ar, keys, {"BTCUSDT": D("-0.5"), "ETHUSDT": D("2")})
        again = await init_ledgers(ar, keys, {"BTCUSDT": D("-0.7")})
        return first, again

    first, again = arun(body)
    assert (sorted(first), again) == (["BTCUSDT", "ETHUSDT"], [])
    led = _fields(r, keys)
    assert (led["last_known_amt"], led["last_known_side"], led["epoch"]) == ("-0.5", "SHORT", "0")
    inits = [f for _i, f in r.xrange(keys.decisions) if f["decision"] == "LEDGER_INIT"]
    assert sorted(f["symbol"] for f in inits) == ["BTCUSDT", "ETHUSDT"]
    assert json.loads(inits[0]["context"])["source"] == "exchange"


def test_a_write_between_read_and_apply_makes_it_decide_again(
    arun: Any, r: redis.Redis, keys: Keys, monkeypatch: Any
) -> None:
    """The compare-and-set: a reconcile landing after the read is not overwritten; the fill is
    applied on top of the reconciled amount, with one audit entry."""
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)
    res = Result.from_fields(result(plan(), filled="0.002").to_fields())
    real = state_mod.ledger_update
    reads: list[str | None] = []

    def interleaved(h: Any, *a: Any) -> Any:
        reads.append(h.get("last_known_amt"))
        if len(reads) == 1:  # an operator's reconcile lands between the read and the write
            r.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "0.5", "epoch": "1"})
        return real(h, *a)

    monkeypatch.setattr(state_mod, "ledger_update", interleaved)
    change = arun(lambda ar: apply_result(ar, keys, res, "1-0"))
    assert reads == ["0.062", "0.5"]  # the first decision was refused, the second stands
    assert change.applied and change.before == D("0.5") and change.after == D("0.498")
    assert _fields(r, keys)["last_known_amt"] == "0.498"
    applies = [f for _i, f in r.xrange(keys.decisions) if f["decision"] == "LEDGER_APPLY"]
    assert len(applies) == 1


# -- the plan's in-flight claim goes with its ledger write ----------------------------------
def test_a_result_releases_its_plans_claim_in_the_ledger_write_and_no_other_plans(
    arun: Any, r: redis.Redis, keys: Keys, monkeypatch: Any
) -> None:
    """``release=True``: the claim is dropped by the ledger's own script (no second call), and
    only when the result's plan holds it."""
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)
    mine, other = plan(), plan(tranche=1)
    calls: list[str] = []
    real = state_mod.release_claim

    async def counted(*a: Any) -> bool:
        calls.append(a[-1])
        return await real(*a)

    monkeypatch.setattr(state_mod, "release_claim", counted)
    r.set(keys.inflight("BTCUSDT"), mine.plan_id, px=15000)
    ch = arun(lambda ar: apply_result(ar, keys, result(mine, filled="0.002"), "1-0", release=True))
    assert ch.applied and r.get(keys.inflight("BTCUSDT")) is None and calls == []
    assert _fields(r, keys)["last_known_amt"] == "0.06"
    # another plan's claim stays; the ledger is still written
    r.set(keys.inflight("BTCUSDT"), other.plan_id, px=15000)
    third = plan(tranche=2)
    ch = arun(lambda ar: apply_result(ar, keys, result(third, filled="0.01"), "2-0", release=True))
    assert ch.applied and r.get(keys.inflight("BTCUSDT")) == other.plan_id and calls == []
    # without release=True (reconcile and tests) the claim is left alone
    r.set(keys.inflight("BTCUSDT"), mine.plan_id, px=15000)
    fourth = plan(tranche=3)
    arun(lambda ar: apply_result(ar, keys, result(fourth, filled="0.01"), "3-0"))
    assert r.get(keys.inflight("BTCUSDT")) == mine.plan_id


def test_a_result_with_nothing_to_write_still_releases_its_claim(
    arun: Any, r: redis.Redis, keys: Keys
) -> None:
    """A duplicate result (its plan applied already) and a result that sent no order write no
    ledger: the claim is released all the same, and only the plan's own."""
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)
    p, blocked = plan(), plan(tranche=1)
    res = result(p, filled="0.002")
    arun(lambda ar: apply_result(ar, keys, res, "1-0", release=True))
    r.set(keys.inflight("BTCUSDT"), p.plan_id, px=15000)
    again = arun(lambda ar: apply_result(ar, keys, res, "2-0", release=True))
    assert not again.applied and again.reason == "duplicate_plan"
    assert r.get(keys.inflight("BTCUSDT")) is None
    assert _fields(r, keys)["last_known_amt"] == "0.06"
    r.set(keys.inflight("BTCUSDT"), p.plan_id, px=15000)
    none = arun(lambda ar: apply_result(ar, keys, result(blocked, "blocked"), "3-0", release=True))
    assert none.reason == "no_order" and r.get(keys.inflight("BTCUSDT")) == p.plan_id
    r.set(keys.inflight("BTCUSDT"), blocked.plan_id, px=15000)
    arun(lambda ar: apply_result(ar, keys, result(blocked, "blocked"), "4-0", release=True))
    assert r.get(keys.inflight("BTCUSDT")) is None


def test_a_conflict_leaves_the_claim_until_the_ledger_is_written(
    arun: Any, r: redis.Redis, keys: Keys, monkeypatch: Any
) -> None:
    """The compare-and-set refused: nothing written, the claim kept; the retry writes both."""
    r.hset(keys.ledger("BTCUSDT"), mapping=LEDGER)
    p = plan()
    r.set(keys.inflight("BTCUSDT"), p.plan_id, px=15000)
    real = state_mod.ledger_update
    seen: list[str | None] = []

    def interleaved(h: Any, *a: Any) -> Any:
        seen.append(r.get(keys.inflight("BTCUSDT")))
        if len(seen) == 1:
            r.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "0.5", "epoch": "1"})
        return real(h, *a)

    monkeypatch.setattr(state_mod, "ledger_update", interleaved)
    ch = arun(lambda ar: apply_result(ar, keys, result(p, filled="0.002"), "1-0", release=True))
    assert seen == [p.plan_id, p.plan_id]  # still held after the refused write
    assert ch.after == D("0.498") and r.get(keys.inflight("BTCUSDT")) is None
