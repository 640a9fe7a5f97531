"""The permit issuer on a real server: event-driven judging, stale on exchange failure and
recovery, the in-flight claim, signatures, redelivery."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import redis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from permitchain.contract.keys import Keys
from permitchain.contract.models import P33Allow
from permitchain.contract.settings import PermitSignature, Settings
from permitchain.contract.signing import verify
from permitchain.runtime.clock import FixedClock
from tests.position_brain.helpers import brain, next_permit, plan, result, running

POLL_S, STALE_S = 0.1, 0.6


def test_stale_while_the_exchange_fails_and_recovery_after(
    arun: Any, keys: Keys, settings: Settings, redis_url: str
) -> None:
    async def body(ar: Any) -> dict[str, Any]:
        pb, sim = brain(
            ar, keys, settings, poll_interval_s=POLL_S, stale_threshold_s=STALE_S, cooldown_s=0.0
        )
        await sim.list_symbol("BTCUSDT")
        await sim.set_position("BTCUSDT", Decimal("0.062"), Decimal(100))
        out: dict[str, Any] = {}
        tranche, last = 0, "0-0"

        async def judge_until(reason: str, timeout_s: float) -> tuple[dict[str, Any], float]:
            """Publish plans one after another, each judged as it arrives, until ``reason``."""
            nonlocal tranche, last
            started = time.monotonic()
            while time.monotonic() - started < timeout_s:
                tranche += 1
                p = plan(tranche=tranche)
                await ar.xadd(keys.plan_stream, p.to_fields())
                permit, last = await next_permit(ar, keys, p.plan_id, last)
                if permit.get("reason", "ok") == reason:
                    return permit, time.monotonic() - started
            raise TimeoutError(f"no {reason} within {timeout_s}s")

        async with running(pb, redis_url):
            out["first_allow"], _ = await judge_until("ok", 5)
            await sim.set_fault(fetch_fail="1")
            before = await ar.hgetall(keys.snapshot("BTCUSDT"))
            out["stale"], out["stale_after_s"] = await judge_until("stale_exchange_state", 5)
            out["during"] = await ar.hgetall(keys.snapshot("BTCUSDT"))
            out["before"] = before
            await sim.clear_faults()
            out["recovered"], out["recovered_after_s"] = await judge_until("ok", 5)
        return out

    out = arun(body)
    assert out["first_allow"]["safe_close_qty"] == "0.046"
    stale = out["stale"]
    assert stale["allow"] is False
    assert float(stale["context"]["snapshot_age_sec"]) >= STALE_S  # shown to the millisecond
    # denials start within the threshold (plus one poll) of the last good snapshot
    assert out["stale_after_s"] < STALE_S + 2 * POLL_S + 0.5
    # nothing was written while the exchange failed: same amount, same ts
    assert out["during"]["position_amt"] == "0.062"
    assert out["during"]["ts_epoch"] == out["before"]["ts_epoch"]
    assert out["recovered"]["allow"] is True
    assert out["recovered_after_s"] < 1.0  # the next poll brings it back


def test_one_close_in_flight_per_symbol_released_by_its_result(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    async def body(ar: Any) -> list[dict[str, Any]]:
        pb, sim = brain(ar, keys, settings)
        await sim.set_position("BTCUSDT", Decimal("-0.062"), Decimal(100))
        await pb.snapshots.poll_once()
        a, b, c = plan(tranche=1), plan(tranche=2), plan(tranche=3)
        await pb.handle_plan("1-0", a.to_fields())
        await pb.handle_plan("2-0", b.to_fields())  # same symbol, a is in flight
        await pb.handle_result("3-0", result(a, "blocked").to_fields())  # a sent nothing
        await pb.handle_plan("4-0", c.to_fields())
        return [json.loads(await ar.get(keys.permit_p33(p.plan_id))) for p in (a, b, c)]

    first, second, third = arun(body)
    assert first["allow"] is True and first["side"] == "SHORT"
    assert first["safe_close_qty"] == "0.046" and first["exchange_position_amt"] == "-0.062"
    assert second["allow"] is False and second["reason"] == "cooldown_in_flight"
    assert second["context"]["in_flight_plan"] == first["plan_id"]
    assert third["allow"] is True


def test_permits_are_signed_with_a_ttl_and_judged_once(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    s = settings.model_copy(
        update={
            "permit_key_p33": SecretStr("k3y"),
            "cooldown_s": 0.0,
            "permit_signature": PermitSignature.HMAC,
        }
    )

    async def body(ar: Any) -> str:
        pb, sim = brain(ar, keys, s)
        await sim.set_position("BTCUSDT", Decimal("0.062"), Decimal(100))
        await pb.snapshots.poll_once()
        p = plan()
        await pb.handle_plan("1-0", p.to_fields())
        await sim.set_position("BTCUSDT", Decimal("0.5"))  # would now be a mismatch
        await pb.snapshots.poll_once()
        await pb.handle_plan("1-0", p.to_fields())  # a redelivery: the first decision stands
        return p.plan_id

    plan_id = arun(body)
    raw = r.get(keys.permit_p33(plan_id))
    body_ = json.loads(raw)
    assert verify(body_, "k3y") and not verify(body_, "other")
    assert P33Allow.from_json(raw).safe_close_qty == Decimal("0.046")
    assert 0 < r.ttl(keys.permit_p33(plan_id)) <= 60
    audit = [f for _i, f in r.xrange(keys.decisions) if f["plan_id"] == plan_id]
    assert [a["decision"] for a in audit] == ["ALLOW"]
    # a missing ledger was initialised at first sight, with its audit entry
    assert r.hget(keys.ledger("BTCUSDT"), "last_known_amt") == "0.062"
    labels = {"symbol": "BTCUSDT", "decision": "ALLOW", "reason": "ok"}
    assert (REGISTRY.get_sample_value("p33_permit_total", labels) or 0) >= 1
    assert REGISTRY.get_sample_value("p33_snapshot_age_sec", {"symbol": "BTCUSDT"}) is not None
    assert REGISTRY.get_sample_value("p33_position_amt", {"symbol": "BTCUSDT"}) == 0.5
    assert REGISTRY.get_sample_value("p33_ledger_amt", {"symbol": "BTCUSDT"}) == 0.062
    ok = REGISTRY.get_sample_value("p33_snapshot_total", {"symbol": "BTCUSDT", "status": "ok"})
    assert (ok or 0) >= 2


def test_no_ledger_is_initialised_from_a_stale_snapshot(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    async def body(ar: Any) -> dict[str, Any]:
        pb, _sim = brain(ar, keys, settings)
        await ar.hset(
            keys.snapshot("BTCUSDT"),
            mapping={
                "position_amt": "0.062",
                "step_size": "0.001",
                "min_qty": "0.001",
                "ts_epoch": f"{time.time() - 11:.6f}",
            },
        )
        p = plan()
        await pb.handle_plan("1-0", p.to_fields())
        return json.loads(await ar.get(keys.permit_p33(p.plan_id)))

    assert arun(body)["reason"] == "stale_exchange_state"
    assert not r.exists(keys.ledger("BTCUSDT"))


def test_the_snapshot_age_at_each_judgement_is_a_histogram(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    """``p33_snapshot_age_at_judgement_seconds``: one observation per plan judged by a
    snapshot, its age at that moment (the clock moved 1.5 s, then 4 s past the poll)."""
    clock = FixedClock(time.time())
    name = "p33_snapshot_age_at_judgement_seconds"

    def seen() -> tuple[float, float]:
        return (
            REGISTRY.get_sample_value(f"{name}_count") or 0.0,
            REGISTRY.get_sample_value(f"{name}_sum") or 0.0,
        )

    async def body(ar: Any) -> tuple[float, float]:
        pb, sim = brain(ar, keys, settings, clock=clock, cooldown_s=0.0)
        await sim.set_position("BTCUSDT", Decimal("0.062"), Decimal(100))
        await pb.snapshots.poll_once()
        written = float(await ar.hget(keys.snapshot("BTCUSDT"), "ts_epoch"))
        clock.t = written + 1.5
        await pb.handle_plan("1-0", plan(tranche=1, created_at=clock.t).to_fields())
        clock.t = written + 4.0
        await pb.handle_plan("2-0", plan(tranche=2, created_at=clock.t).to_fields())
        return seen()

    count, total = seen()
    after_count, after_total = arun(body)
    assert after_count - count == 2
    assert abs((after_total - total) - 5.5) < 0.01
