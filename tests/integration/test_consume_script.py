"""consume_permits.lua on a real server: by value, atomic, once."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.contract.models import GovernorPermit, P33Allow, P33Deny, make_plan_id
from permitchain.store.scripts import Scripts

SYM = "BTCUSDT"
PLAN = make_plan_id(SYM, "PARTIAL_75", 0, 3)
OTHER = make_plan_id(SYM, "PARTIAL_50", 0, 2)


def gov(granted: bool = True, plan_id: str = PLAN, symbol: str = SYM, ttl: float = 3600) -> str:
    now = time.time()
    return GovernorPermit(
        plan_id=plan_id,
        symbol=symbol,
        decision="GRANT" if granted else "DENY",
        granted=granted,
        reason="testnet_auto_approve" if granted else "trading_halted",
        mode="testnet",
        created_at=now,
        expires_at=now + ttl,
    ).to_json()


def p33(
    allow: bool = True,
    plan_id: str = PLAN,
    symbol: str = SYM,
    qty: str = "0.046",
    ttl: float = 3600,
) -> str:
    now = time.time()
    if allow:
        return P33Allow(
            plan_id=plan_id,
            symbol=symbol,
            safe_close_qty=Decimal(qty),
            side="LONG",
            exchange_position_amt=Decimal("0.062"),
            ledger_position_amt=Decimal("0.062"),
            snapshot_age_sec=Decimal("0.5"),
            created_at=now,
            expires_at=now + ttl,
        ).to_json()
    return P33Deny(
        plan_id=plan_id,
        symbol=symbol,
        reason="reconcile_required_qty_mismatch",
        created_at=now,
        expires_at=now + ttl,
    ).to_json()


@pytest.fixture
def consume(r: redis.Redis, keys: Keys) -> Any:
    scripts = Scripts(r)

    def call(mode: str = "try", plan_id: str = PLAN) -> dict[str, Any]:
        raw = scripts.consume_permits(
            keys=[
                keys.permit_governor(plan_id),
                keys.permit_p33(plan_id),
                keys.exec_record(plan_id),
            ],
            args=[plan_id, SYM, 1, mode, 3600],
        )
        out: dict[str, Any] = json.loads(raw)
        return out

    return call


def put(r: redis.Redis, keys: Keys, g: str | None, p: str | None) -> None:
    if g is not None:
        r.set(keys.permit_governor(PLAN), g, ex=60)
    if p is not None:
        r.set(keys.permit_p33(PLAN), p, ex=60)


def test_both_allow_consumed_once(r: redis.Redis, keys: Keys, consume: Any) -> None:
    put(r, keys, gov(), p33())
    v = consume()
    assert v["verdict"] == "ok"
    assert json.loads(v["p33"])["safe_close_qty"] == "0.046"
    assert not r.exists(keys.permit_governor(PLAN), keys.permit_p33(PLAN))
    assert r.hget(keys.exec_record(PLAN), "state") == "permitted"
    # the same plan again, even with fresh permits, never consumes twice
    put(r, keys, gov(), p33())
    again = consume()
    assert again == {"verdict": "already_executed", "state": "permitted"}
    assert r.exists(keys.permit_governor(PLAN), keys.permit_p33(PLAN)) == 2


@pytest.mark.parametrize(
    ("g", "p", "verdict"),
    [
        (False, True, "governor_denied"),
        (True, False, "p33_denied"),
        (False, False, "governor_denied"),
    ],
)
def test_any_deny_blocks(
    r: redis.Redis, keys: Keys, consume: Any, g: bool, p: bool, verdict: str
) -> None:
    put(r, keys, gov(granted=g), p33(allow=p))
    assert consume()["verdict"] == verdict
    assert r.hgetall(keys.exec_record(PLAN))["state"] == "blocked"
    # a later allow for the same plan cannot undo the block
    r.delete(keys.permit_governor(PLAN), keys.permit_p33(PLAN))
    put(r, keys, gov(), p33())
    assert consume()["verdict"] == "already_executed"


def test_deny_blocks_even_when_other_missing(r: redis.Redis, keys: Keys, consume: Any) -> None:
    put(r, keys, None, p33(allow=False))
    assert consume()["verdict"] == "p33_denied"


@pytest.mark.parametrize(
    ("g", "p", "verdict"),
    [(None, None, "missing_both"), (True, None, "missing_p33"), (None, True, "missing_governor")],
)
def test_missing_waits_and_changes_nothing(
    r: redis.Redis, keys: Keys, consume: Any, g: bool | None, p: bool | None, verdict: str
) -> None:
    put(r, keys, gov() if g else None, p33() if p else None)
    v = consume()
    assert v["verdict"] == verdict
    assert not r.exists(keys.exec_record(PLAN))
    present = [k for k in (keys.permit_governor(PLAN), keys.permit_p33(PLAN)) if r.exists(k)]
    assert len(present) == (g is not None) + (p is not None)


def test_final_mode_times_out(r: redis.Redis, keys: Keys, consume: Any) -> None:
    put(r, keys, gov(), None)
    v = consume("final")
    assert v == {"verdict": "permit_timeout", "detail": "missing_p33", "gov_ttl": 60, "p33_ttl": -2}
    assert r.hget(keys.exec_record(PLAN), "reason") == "permit_timeout"
    assert r.exists(keys.permit_governor(PLAN))  # not consumed


@pytest.mark.parametrize(
    ("g", "p", "detail"),
    [
        (gov(plan_id=OTHER), p33(), "governor plan_id"),
        (gov(), p33(plan_id=OTHER), "p33 plan_id"),
        (gov(symbol="ETHUSDT"), p33(), "governor symbol"),
        (gov(), p33(symbol="ETHUSDT"), "p33 symbol"),
        ("not json", p33(), "governor bad JSON"),
        (gov(), p33().replace('"0.046"', '"0"'), "p33 safe_close_qty"),
        (gov(), p33().replace('"0.046"', '"-1"'), "p33 safe_close_qty"),
        (gov(), p33().replace('"0.046"', '"nan"'), "p33 safe_close_qty"),
        (gov(), p33().replace('"0.046"', "0.046"), "p33 safe_close_qty"),
        (gov(ttl=-1), p33(), "governor expired"),
        (gov(), p33(ttl=-1), "p33 expired"),
        (gov().replace('"schema":1', '"schema":2'), p33(), "governor schema"),
        (
            gov().replace('"granted":true', '"granted":"true"'),
            p33(),
            "governor decision/granted inconsistent",
        ),
        (gov(), p33().replace('"allow":true', '"allow":"true"'), "p33 allow"),
        (
            gov().replace('"decision":"GRANT"', '"decision":"DENY"'),
            p33(),
            "governor decision/granted inconsistent",
        ),
    ],
)
def test_invalid_permit_blocks(
    r: redis.Redis, keys: Keys, consume: Any, g: str, p: str, detail: str
) -> None:
    put(r, keys, g, p)
    v = consume()
    assert v == {"verdict": "permit_invalid", "detail": detail, "gov_ttl": 60, "p33_ttl": 60}
    assert r.hget(keys.exec_record(PLAN), "state") == "blocked"


def test_wrong_key_type_is_invalid_not_fatal(r: redis.Redis, keys: Keys, consume: Any) -> None:
    r.hset(keys.permit_governor(PLAN), mapping={"granted": "true"})
    r.set(keys.permit_p33(PLAN), p33())
    assert consume() == {
        "verdict": "permit_invalid",
        "detail": "governor wrong key type hash",
        "gov_ttl": -1,
        "p33_ttl": -1,
    }


def test_verdicts_carry_the_permits_ttls(r: redis.Redis, keys: Keys, consume: Any) -> None:
    r.set(keys.permit_governor(PLAN), gov(), ex=42)
    assert consume()["gov_ttl"] == 42 and consume()["p33_ttl"] == -2
    r.set(keys.permit_p33(PLAN), p33(), ex=30)
    v = consume()
    assert (v["verdict"], v["gov_ttl"], v["p33_ttl"]) == ("ok", 42, 30)


def test_deny_verdict_carries_ttls(r: redis.Redis, keys: Keys, consume: Any) -> None:
    r.set(keys.permit_p33(PLAN), p33(allow=False), ex=20)
    v = consume()
    assert (v["verdict"], v["gov_ttl"], v["p33_ttl"]) == ("p33_denied", -2, 20)
