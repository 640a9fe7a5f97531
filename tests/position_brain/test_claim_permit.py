"""P3.3 with COOLDOWN_S > 0 on a plain server: the in-flight claim and the allow are one
script (p33_claim_permit.lua); the log line, the metric and the audit entry follow what it
wrote."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from permitchain.contract.keys import Keys
from permitchain.contract.reasons import COOLDOWN_IN_FLIGHT
from permitchain.contract.settings import PermitSignature, Settings
from permitchain.contract.signing import verify
from permitchain.position_brain.checks import P33Decision
from permitchain.position_brain.service import PositionBrain
from permitchain.runtime.permits import claim_and_write_permit
from permitchain.store.scripts import source
from tests.position_brain.helpers import brain, plan

COOLDOWN_S = 15.0
OTHER = "other-plan-id"


def _settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "permit_key_p33": SecretStr("k3y"),
            "permit_signature": PermitSignature.HMAC,
            "cooldown_s": COOLDOWN_S,
        }
    )


async def _ready(ar: Any, keys: Keys, settings: Settings, symbol: str) -> PositionBrain:
    """A brain with COOLDOWN_S and signing, ``symbol`` long 0.062 and polled once."""
    pb, sim = brain(ar, keys, _settings(settings))
    await sim.list_symbol(symbol)
    await sim.set_position(symbol, Decimal("0.062"), Decimal(100))
    await pb.snapshots.poll_once()
    return pb


def _audit(r: redis.Redis, keys: Keys, plan_id: str) -> list[dict[str, str]]:
    return [f for _i, f in r.xrange(keys.decisions) if f["plan_id"] == plan_id]


def _events(r: redis.Redis, keys: Keys, plan_id: str) -> list[dict[str, str]]:
    return [f for _i, f in r.xrange(keys.permit_event_stream) if f["plan_id"] == plan_id]


def _count(symbol: str, decision: str, reason: str) -> float:
    labels = {"symbol": symbol, "decision": decision, "reason": reason}
    return REGISTRY.get_sample_value("p33_permit_total", labels) or 0.0


def _round_trips(pb: PositionBrain, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the store calls the brain makes (a pipeline counts once)."""
    calls: list[str] = []
    real_pipeline, real_set = pb.redis.pipeline, pb.redis.set

    def pipeline(*a: Any, **kw: Any) -> Any:
        p = real_pipeline(*a, **kw)
        real_execute = p.execute

        async def execute(*ea: Any, **ekw: Any) -> Any:
            calls.append("pipeline")
            return await real_execute(*ea, **ekw)

        p.execute = execute
        return p

    async def set_(*a: Any, **kw: Any) -> Any:
        calls.append("set")
        return await real_set(*a, **kw)

    real_command = pb.redis.execute_command

    async def execute_command(*a: Any, **kw: Any) -> Any:  # every script call passes here
        if a and a[0] == "EVALSHA":
            calls.append("script")
        return await real_command(*a, **kw)

    monkeypatch.setattr(pb.redis, "pipeline", pipeline)
    monkeypatch.setattr(pb.redis, "set", set_)
    monkeypatch.setattr(pb.redis, "execute_command", execute_command)
    return calls


def test_allowed_takes_the_claim_and_writes_the_allow_in_one_script(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = plan(symbol="CLAIMAUSDT")

    async def body(ar: Any) -> list[str]:
        pb = await _ready(ar, keys, settings, p.symbol)
        await ar.script_load(source("p33_claim_permit"))  # no NOSCRIPT fallback counted
        calls = _round_trips(pb, monkeypatch)
        await pb.handle_plan("1-0", p.to_fields())
        return calls

    before = _count(p.symbol, "ALLOW", "ok")
    calls = arun(body)
    assert calls == ["pipeline", "script"]  # the read, then the claim with the permit
    assert r.get(keys.inflight(p.symbol)) == p.plan_id
    assert 0 < r.pttl(keys.inflight(p.symbol)) <= COOLDOWN_S * 1000
    permit = json.loads(r.get(keys.permit_p33(p.plan_id)))
    assert permit["allow"] is True and permit["safe_close_qty"] == "0.046"
    assert verify(permit, "k3y")
    assert 0 < r.ttl(keys.permit_p33(p.plan_id)) <= 60
    audit = _audit(r, keys, p.plan_id)
    assert [(a["decision"], a["reason"], a["layer"]) for a in audit] == [
        ("ALLOW", "ok", "position-brain")
    ]
    assert json.loads(audit[0]["context"]) == {"permit": permit}
    assert _events(r, keys, p.plan_id) == [{"plan_id": p.plan_id, "layer": "position-brain"}]
    assert _count(p.symbol, "ALLOW", "ok") == before + 1


def test_claim_taken_by_a_peer_after_the_read_gives_the_cooldown_deny_naming_it(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer instance allowed another plan for the symbol between this plan's read and its
    claim: the deny is the one P3.3 writes for cooldown_in_flight, the claim untouched."""
    p = plan(symbol="CLAIMBUSDT")
    seen: dict[str, Any] = {}

    async def body(ar: Any) -> None:
        pb = await _ready(ar, keys, settings, p.symbol)
        real = pb.issue_claimed
        real_issue = pb.issue

        async def peer_first(plan_: Any, d: P33Decision, **kw: Any) -> None:
            await ar.set(keys.inflight(p.symbol), OTHER, px=9000)
            await real(plan_, d, **kw)

        async def issue(plan_: Any, d: P33Decision, **kw: Any) -> None:
            # what P3.3 writes for this deny: the permit built from this decision
            seen["expected"] = pb.permit(plan_, d, **kw)[0]
            seen["decision"] = d
            await real_issue(plan_, d, **kw)

        monkeypatch.setattr(pb, "issue_claimed", peer_first)
        monkeypatch.setattr(pb, "issue", issue)
        await pb.handle_plan("1-0", p.to_fields())

    before = _count(p.symbol, "DENY", COOLDOWN_IN_FLIGHT)
    arun(body)
    raw = r.get(keys.permit_p33(p.plan_id))
    assert raw == seen["expected"]
    permit = json.loads(raw)
    assert permit["allow"] is False and permit["reason"] == COOLDOWN_IN_FLIGHT
    assert permit["context"]["in_flight_plan"] == OTHER and verify(permit, "k3y")
    assert seen["decision"].context["in_flight_plan"] == OTHER
    assert r.get(keys.inflight(p.symbol)) == OTHER  # no claim change
    assert 0 < r.pttl(keys.inflight(p.symbol)) <= 9000
    audit = _audit(r, keys, p.plan_id)
    assert [(a["decision"], a["reason"]) for a in audit] == [("DENY", COOLDOWN_IN_FLIGHT)]
    assert json.loads(audit[0]["context"]) == {"permit": permit}
    assert len(_events(r, keys, p.plan_id)) == 1
    assert _count(p.symbol, "DENY", COOLDOWN_IN_FLIGHT) == before + 1
    assert _count(p.symbol, "ALLOW", "ok") == 0


def test_claim_held_by_the_plan_itself_is_kept_and_the_allow_written(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    """A redelivered plan whose claim is its own (no permit yet): allowed as before, the
    claim neither changed nor extended."""
    p = plan(symbol="CLAIMCUSDT")
    r.set(keys.inflight(p.symbol), p.plan_id, px=5000)

    async def body(ar: Any) -> None:
        pb = await _ready(ar, keys, settings, p.symbol)
        await pb.handle_plan("1-0", p.to_fields())

    arun(body)
    assert r.get(keys.inflight(p.symbol)) == p.plan_id
    assert 0 < r.pttl(keys.inflight(p.symbol)) <= 5000
    assert json.loads(r.get(keys.permit_p33(p.plan_id)))["allow"] is True
    assert [a["decision"] for a in _audit(r, keys, p.plan_id)] == ["ALLOW"]


def test_a_permit_written_meanwhile_stands_and_nothing_is_written(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent delivery of the same plan decided first (after this one's read): its
    permit stands; no claim, no event, no audit entry, no metric from this one."""
    p = plan(symbol="CLAIMDUSDT")

    async def body(ar: Any) -> None:
        pb = await _ready(ar, keys, settings, p.symbol)
        real = pb.issue_claimed

        async def peer_first(plan_: Any, d: P33Decision, **kw: Any) -> None:
            await ar.set(keys.permit_p33(p.plan_id), "first", ex=60)
            await real(plan_, d, **kw)

        monkeypatch.setattr(pb, "issue_claimed", peer_first)
        await pb.handle_plan("1-0", p.to_fields())

    arun(body)
    assert r.get(keys.permit_p33(p.plan_id)) == "first"
    assert r.get(keys.inflight(p.symbol)) is None
    assert _audit(r, keys, p.plan_id) == [] and _events(r, keys, p.plan_id) == []
    assert _count(p.symbol, "ALLOW", "ok") == 0


def test_the_script_verdicts(arun: Any, r: redis.Redis, keys: Keys) -> None:
    claim, key = keys.inflight("SCRIPTUSDT"), keys.permit_p33("plan-a")

    async def call(ar: Any, plan_id: str = "plan-a", permit: str = "ALLOW-JSON") -> Any:
        return await claim_and_write_permit(
            ar,
            keys,
            claim_key=claim,
            claim_ms=15000,
            key=key,
            permit_json=permit,
            ttl_s=60,
            plan_id=plan_id,
            symbol="SCRIPTUSDT",
            layer="position-brain",
            reason="ok",
            context={"permit": {"x": 1}},
            ts=1.5,
        )

    async def body(ar: Any) -> list[Any]:
        await ar.set(claim, OTHER, px=7000)
        held = await call(ar)
        held_state = (await ar.get(claim), await ar.get(key))
        await ar.delete(claim)
        first = await call(ar)
        again = await call(ar, permit="SECOND")  # the permit exists: nothing overwritten
        return [held, held_state, first, again]

    held, held_state, first, again = arun(body)
    assert held == ("held", OTHER) and held_state == (OTHER, None)
    assert first == ("allow", "") and again == ("exists", "")
    assert r.get(key) == "ALLOW-JSON" and r.get(claim) == "plan-a"
    audit = _audit(r, keys, "plan-a")
    assert [(a["decision"], a["ts"], a["symbol"]) for a in audit] == [
        ("ALLOW", "1.500000", "SCRIPTUSDT")
    ]
    assert len(_events(r, keys, "plan-a")) == 1
