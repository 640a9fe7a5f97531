"""The governor's store and runner on the real server: atomic reservations, settlement by
result, expiry, trading state read fail-closed, permits written and signed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, GovernorPermit, Plan, Result, ResultStatus
from permitchain.contract.settings import ApplyMode, Settings
from permitchain.contract.signing import verify
from permitchain.governor.policy import GovernorPolicy, decide
from permitchain.governor.rates import ReservationBook, Settlement
from permitchain.governor.service import Governor
from permitchain.governor.store import GovernorStore
from permitchain.runtime.clock import FixedClock
from permitchain.store import async_client

from .plans import T0, plan

SYM = "BTCUSDT"
TTL = 61.2
GOV_KEY = "gov-secret"


def gov_settings(redis_url: str, prefix: str, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "apply_mode": ApplyMode.PRODUCTION,
        "permit_key_governor": GOV_KEY,
        "permit_key_p33": "p33-secret",
        "permit_signature": "hmac",
    }
    return Settings(**{**base, **kw})


def seed_snapshot(r: redis.Redis, keys: Keys) -> None:
    r.hset(
        keys.snapshot(SYM),
        mapping={
            "position_amt": "0.062",
            "mark_price": "107",
            "step_size": "0.001",
            "min_qty": "0.001",
            "ts_epoch": str(T0),
        },
    )


def permit(r: redis.Redis, keys: Keys, p: Plan) -> GovernorPermit:
    raw = r.get(keys.permit_governor(p.plan_id))
    assert raw is not None, f"no governor permit for {p.plan_id}"
    return GovernorPermit.from_json(raw)


# -- the reserve script --------------------------------------------------------------------
def test_script_follows_the_pure_rules(arun: Callable[..., Any], keys: Keys) -> None:
    """The same sequence through the script and through the in-memory model."""
    steps = [
        ("p1", T0),
        ("p2", T0 + 10),
        ("p3", T0 + 20),
        ("p1", T0 + 30),
        ("p3", T0 + 61.2),
        ("p4", T0 + 71.2),
        ("p5", T0 + 400),
        ("p8", T0 + 720),
        ("p9", T0 + 730),
        ("p6", T0 + 3700),
    ]
    confirm = {"p1": T0 + 5, "p5": T0 + 401}
    book = ReservationBook()

    async def body(r: Any) -> list[tuple[str, str]]:
        store = GovernorStore(r, keys)
        out = []
        for pid, now in steps:
            for cp, ts in list(confirm.items()):
                if ts <= now:
                    await store.settle(SYM, cp, Settlement.CONFIRM, ts)
                    book.settle(cp, ResultStatus.FILLED, ts)
                    del confirm[cp]
            verdict, _c5, _ch = await store.reserve(SYM, pid, now, TTL, 2, 3)
            out.append((verdict, book.reserve(pid, now, TTL, 2, 3)))
        return out

    got = arun(body)
    assert [a for a, _b in got] == [b for _a, b in got]
    assert [a for a, _b in got] == [
        "reserved",
        "reserved",
        "rate_limit_5min",
        "already",
        "rate_limit_5min",
        "reserved",
        "reserved",
        "reserved",
        "rate_limit_hour",
        "reserved",
    ]


def test_concurrent_reservations_never_exceed_the_limit(
    arun: Callable[..., Any], keys: Keys, redis_url: str
) -> None:
    async def body(_r: Any) -> list[str]:
        clients = [async_client(redis_url) for _ in range(20)]
        try:
            verdicts = await asyncio.gather(
                *(
                    GovernorStore(c, keys).reserve(SYM, f"plan{i:02d}", T0, TTL, 2, 3)
                    for i, c in enumerate(clients)
                )
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        return [v for v, _, _ in verdicts]

    verdicts = arun(body)
    assert verdicts.count("reserved") == 2
    assert verdicts.count("rate_limit_5min") == 18


def test_two_governors_at_the_limit_grant_only_one(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    """One execution confirmed (MAX_EXEC_PER_5MIN 2): two plans reach two governors at once."""
    seed_snapshot(r, keys)
    s = gov_settings(redis_url, prefix)
    plans = [plan(tranche=1, created_at=T0), plan(Action.PARTIAL_50, tranche=2, created_at=T0)]

    async def body(r0: Any) -> None:
        await GovernorStore(r0, keys).settle(SYM, "earlier", Settlement.CONFIRM, T0 - 10)
        clients = [async_client(redis_url) for _ in plans]
        try:
            govs = [Governor(c, keys, s, FixedClock(T0)) for c in clients]
            await asyncio.gather(
                *(g.handle("0-1", p.to_fields()) for g, p in zip(govs, plans, strict=True))
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    arun(body)
    permits = [permit(r, keys, p) for p in plans]
    assert sorted(p.reason for p in permits) == ["policy_ok", "rate_limit_5min"]
    assert [p.granted for p in permits].count(True) == 1
    assert r.zcard(keys.governor_reservations(SYM)) == 1


# -- settlement and expiry -----------------------------------------------------------------
def _result(p: Plan, status: ResultStatus, ts: float) -> dict[str, str]:
    filled = status in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED)
    qty = Decimal("0.046") if filled else Decimal(0)
    return Result(
        plan_id=p.plan_id, symbol=p.symbol, executed=filled, status=status, filled_qty=qty, ts=ts
    ).to_fields()


@pytest.mark.parametrize("status", [ResultStatus.REJECTED, ResultStatus.BLOCKED])
def test_rejected_or_blocked_result_releases_the_slot(
    arun: Callable[..., Any],
    r: redis.Redis,
    keys: Keys,
    redis_url: str,
    prefix: str,
    status: ResultStatus,
) -> None:
    seed_snapshot(r, keys)
    clock = FixedClock(T0)
    p1, p2, p3 = (
        plan(a, created_at=T0) for a in (Action.PARTIAL_25, Action.PARTIAL_50, Action.PARTIAL_75)
    )

    async def body(ar: Any) -> None:
        gov = Governor(ar, keys, gov_settings(redis_url, prefix), clock)
        await gov.handle("1-1", p1.to_fields())
        await gov.handle("1-2", p2.to_fields())
        await gov.handle_result("2-1", _result(p1, status, T0 + 1))
        clock.advance(2)
        await gov.handle("1-3", p3.to_fields())

    arun(body)
    assert [permit(r, keys, p).reason for p in (p1, p2, p3)] == ["policy_ok"] * 3
    assert r.zcard(keys.governor_executions(SYM)) == 0


def _count(name: str, **labels: str) -> float:
    """The process's ``name{symbol=SYM, **labels}`` as /metrics shows it (0 before the first)."""
    return REGISTRY.get_sample_value(name, {"symbol": SYM, **labels}) or 0.0


def test_filled_result_is_recorded_at_its_time_and_trimmed_after_an_hour(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    seed_snapshot(r, keys)
    grants = _count("governor_permit_total", decision="GRANT", reason="policy_ok")
    confirms = _count("governor_results_total", settlement="confirm")
    clock = FixedClock(T0)
    ps = [plan(a, created_at=T0) for a in (Action.PARTIAL_25, Action.PARTIAL_50)]

    async def body(ar: Any) -> None:
        gov = Governor(ar, keys, gov_settings(redis_url, prefix), clock)
        for i, p in enumerate(ps):
            await gov.handle(f"1-{i}", p.to_fields())
            await gov.handle_result(f"2-{i}", _result(p, ResultStatus.FILLED, T0 + i))
            await gov.handle_result(f"2-{i}", _result(p, ResultStatus.FILLED, T0 + i))  # again
        await gov.store.settle(SYM, "late", Settlement.CONFIRM, T0 + 3600)

    arun(body)
    assert r.zcard(keys.governor_reservations(SYM)) == 0
    # T0 is exactly one hour before the late one: trimmed; T0+1 stays
    assert r.zrange(keys.governor_executions(SYM), 0, -1, withscores=True) == [
        (ps[1].plan_id, T0 + 1),
        ("late", T0 + 3600),
    ]
    assert 3600 < r.ttl(keys.governor_executions(SYM)) <= 3900
    # counted: each permit once, each result as often as it came (not the direct settle)
    assert _count("governor_permit_total", decision="GRANT", reason="policy_ok") == grants + 2
    assert _count("governor_results_total", settlement="confirm") == confirms + 4


def test_reservation_expires_when_the_permit_is_never_used(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    seed_snapshot(r, keys)
    clock = FixedClock(T0)
    s = gov_settings(redis_url, prefix)  # PERMIT_TTL_SECONDS 60, APPLY_PERMIT_WAIT_MS 1200
    p1, p2, p3 = (
        plan(a, created_at=T0) for a in (Action.PARTIAL_25, Action.PARTIAL_50, Action.PARTIAL_75)
    )

    async def body(ar: Any) -> list[int]:
        gov = Governor(ar, keys, s, clock)
        await gov.handle("1-1", p1.to_fields())
        await gov.handle("1-2", p2.to_fields())
        counts = [(await gov.store.read_input(SYM, T0 + 61.199)).exec_last_5min]
        counts.append((await gov.store.read_input(SYM, T0 + 61.2)).exec_last_5min)
        clock.t = T0 + 25  # the third plan at the limit, while both reservations live
        await gov.handle("1-3", p3.to_fields())
        return counts

    assert arun(body) == [2, 0]
    assert permit(r, keys, p3).reason == "rate_limit_5min"
    assert r.zrange(keys.governor_reservations(SYM), 0, -1, withscores=True) == [
        (p1.plan_id, T0 + 61.2),
        (p2.plan_id, T0 + 61.2),
    ]
    # the key itself goes away on the server once every reservation in it is over
    assert 0 < r.ttl(keys.governor_reservations(SYM)) <= 63


# -- trading state, permits ----------------------------------------------------------------
@pytest.mark.parametrize(
    "setup",
    [
        lambda r, k: r.set(k.trading_state, "HALTED"),
        lambda r, k: r.set(k.trading_state, "halted"),
        lambda r, k: r.set(k.trading_state, "active"),
        lambda r, k: r.set(k.trading_state, " ACTIVE "),
        lambda r, k: r.set(k.trading_state, b"\xff\xfeACTIVE"),
        lambda r, k: r.hset(k.trading_state, mapping={"state": "ACTIVE"}),  # WRONGTYPE
        lambda r, k: r.rpush(k.trading_state, "ACTIVE"),
    ],
    ids=["halted", "lower", "lower-active", "whitespace", "bad-bytes", "hash", "list"],
)
@pytest.mark.parametrize("mode", ["testnet", "production"])
def test_unreadable_trading_state_denies(
    arun: Callable[..., Any],
    r: redis.Redis,
    keys: Keys,
    redis_url: str,
    prefix: str,
    setup: Callable[[redis.Redis, Keys], object],
    mode: str,
) -> None:
    seed_snapshot(r, keys)
    setup(r, keys)
    p = plan(mode=mode, created_at=T0)

    async def body(ar: Any) -> str:
        gov = Governor(ar, keys, gov_settings(redis_url, prefix, apply_mode=mode), FixedClock(T0))
        await gov.handle("1-1", p.to_fields())
        return (await gov.store.trading_state()).value

    assert arun(body) == "HALTED"
    got = permit(r, keys, p)
    assert (got.decision, got.granted, got.reason) == ("DENY", False, "trading_halted")


def test_grant_permit_is_signed_audited_and_carries_qty(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    seed_snapshot(r, keys)
    p = plan(created_at=T0)

    async def body(ar: Any) -> None:
        await Governor(ar, keys, gov_settings(redis_url, prefix), FixedClock(T0)).handle(
            "1-1", p.to_fields()
        )

    arun(body)
    raw = r.get(keys.permit_governor(p.plan_id))
    assert raw is not None
    body_ = json.loads(raw)
    assert verify(body_, GOV_KEY)
    got = GovernorPermit.from_json(raw)
    assert (got.decision, got.reason, got.mode) == ("GRANT", "policy_ok", "production")
    assert (got.computed_qty, got.computed_notional) == (Decimal("0.046"), Decimal("4.922"))
    assert got.expires_at - got.created_at == 60
    assert 0 < r.ttl(keys.permit_governor(p.plan_id)) <= 60
    audit = [f for _i, f in r.xrange(keys.decisions) if f["plan_id"] == p.plan_id]
    assert [(a["layer"], a["decision"], a["reason"]) for a in audit] == [
        ("governor", "GRANT", "policy_ok")
    ]
    assert json.loads(audit[0]["context"])["reservation"] == "reserved"


def test_redelivery_keeps_the_first_decision_and_holds_no_slot(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    seed_snapshot(r, keys)
    p1, p2, p3 = (
        plan(a, created_at=T0) for a in (Action.PARTIAL_25, Action.PARTIAL_50, Action.PARTIAL_75)
    )

    async def body(ar: Any) -> None:
        gov = Governor(ar, keys, gov_settings(redis_url, prefix), FixedClock(T0))
        for i, p in enumerate((p1, p2, p3)):
            await gov.handle(f"1-{i}", p.to_fields())  # p3: rate_limit_5min
        await gov.handle_result("2-1", _result(p1, ResultStatus.REJECTED, T0 + 1))
        await gov.handle("1-2", p3.to_fields())  # redelivered: would be granted now

    arun(body)
    got = permit(r, keys, p3)
    assert (got.decision, got.reason) == ("DENY", "rate_limit_5min")
    assert [m for m, _s in r.zrange(keys.governor_reservations(SYM), 0, -1, withscores=True)] == [
        p2.plan_id
    ]


def test_inputs_fail_closed_on_damaged_keys(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys
) -> None:
    r.hset(keys.snapshot(SYM), mapping={"position_amt": "0.062", "mark_price": "107"})
    r.hset(keys.governor_notional("2027-01-15"), mapping={"a": "10", "b": "garbage"})
    r.set(keys.governor_executions(SYM), "not a zset")

    async def body(ar: Any) -> Any:
        return await GovernorStore(ar, keys).read_input(SYM, T0)  # T0 is 2027-01-15 UTC

    got = arun(body)
    assert (got.position_amt, got.mark_price) == (None, None)  # incomplete snapshot: none
    assert got.notional_today > Decimal(10**9)  # unreadable: over every cap
    assert got.exec_last_5min > 10**9 and got.exec_last_hour > 10**9  # unreadable: at limits


def test_without_windows_the_counts_read_as_unreadable(
    arun: Callable[..., Any], r: redis.Redis, keys: Keys
) -> None:
    """An auto-approving governor skips the rate windows; what it skips reads as unreadable,
    so a production decision on those inputs would deny, never allow."""
    r.hset(
        keys.snapshot(SYM),
        mapping={
            "position_amt": "0.062",
            "mark_price": "107",
            "step_size": "0.001",
            "min_qty": "0.001",
            "ts_epoch": f"{T0:.6f}",
        },
    )

    async def body(ar: Any) -> Any:
        return await GovernorStore(ar, keys).read_input(SYM, T0, windows=False)

    got = arun(body)
    assert got.position_amt == Decimal("0.062")  # the snapshot is still read
    assert got.exec_last_5min > 10**9 and got.notional_today > Decimal(10**9)
    prod = GovernorPolicy(mode="production", allow_list=frozenset({SYM}), plan_max_age_s=30)
    d = decide(plan(), got, prod, T0)
    assert not d.granted and d.reason == "rate_limit_5min"
