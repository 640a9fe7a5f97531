"""Planner rules (pure, no Redis) and its runner's sweep (real server)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import redis

from permitchain.apply_layer.planner import PlannerPolicy, plan_from_fields
from permitchain.apply_layer.planner_service import Planner
from permitchain.contract.errors import ContractError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan, Proposal
from permitchain.contract.settings import Settings
from permitchain.runtime.clock import FixedClock
from permitchain.store.steps import ClusterSteps

NOW = 1_800_000_000.0
POLICY = PlannerPolicy(
    allow_list=frozenset({"BTCUSDT", "ETHUSDT"}),
    kill_score_threshold=Decimal("0.5"),
    proposal_ttl_s=60,
    plan_max_age_s=30,
    mode="testnet",
)


def fields(**kw: Any) -> dict[str, str]:
    base: dict[str, Any] = dict(
        proposal_id="p1",
        symbol="BTCUSDT",
        action="PARTIAL_75",
        kill_score="0.539",
        new_sl="100.2",
        position_epoch=1,
        tranche=3,
        ts_epoch=NOW - 1,
    )
    return Proposal(**{**base, **kw}).to_fields()


def decide(f: dict[str, str]) -> tuple[str, str]:
    plan, _err = plan_from_fields(f, POLICY, NOW)
    return plan.decision.value, ",".join(plan.reason_codes)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, ("EXECUTE", "plan_ok")),
        ({"symbol": "DOGEUSDT"}, ("SKIP", "not_in_allowlist")),
        ({"kill_score": "0.49"}, ("SKIP", "below_kill_score_threshold")),
        ({"kill_score": "0.5"}, ("EXECUTE", "plan_ok")),
        ({"action": "HOLD"}, ("SKIP", "hold_action")),
        ({"action": "PARTIAL_33"}, ("SKIP", "unknown_action")),
        ({"action": "partial_25"}, ("SKIP", "unknown_action")),
        ({"ts_epoch": NOW - 61}, ("SKIP", "proposal_expired")),
        ({"ts_epoch": NOW + 60}, ("SKIP", "invalid_proposal")),
        ({"action": "UPDATE_SL", "new_sl": None}, ("SKIP", "invalid_proposal")),
    ],
)
def test_rules(change: dict[str, Any], expected: tuple[str, str]) -> None:
    assert decide(fields(**change)) == expected


@pytest.mark.parametrize(
    "missing",
    ["kill_score", "position_epoch", "tranche", "ts_epoch", "action", "proposal_id", "schema"],
)
def test_a_missing_field_is_a_skip_never_a_guess(missing: str) -> None:
    f = fields()
    del f[missing]
    plan, error = plan_from_fields(f, POLICY, NOW)
    assert (plan.decision.value, plan.reason_codes) == ("SKIP", ("invalid_proposal",))
    assert error and plan.symbol == "BTCUSDT"


def test_unreadable_symbol_is_a_dead_letter() -> None:
    with pytest.raises(ContractError):
        plan_from_fields({**fields(), "symbol": "btc/usdt"}, POLICY, NOW)


@pytest.mark.parametrize(
    ("action", "steps", "fraction"),
    [
        (
            "PARTIAL_25",
            [
                ("CLOSE_PARTIAL_25", "market_reduce_only", "0.25"),
                ("UPDATE_SL", "stop_market_reduce_only", None),
            ],
            "0.25",
        ),
        (
            "PARTIAL_50",
            [
                ("CLOSE_PARTIAL_50", "market_reduce_only", "0.5"),
                ("UPDATE_SL", "stop_market_reduce_only", None),
            ],
            "0.5",
        ),
        (
            "PARTIAL_75",
            [
                ("CLOSE_PARTIAL_75", "market_reduce_only", "0.75"),
                ("UPDATE_SL", "stop_market_reduce_only", None),
            ],
            "0.75",
        ),
        ("FULL_CLOSE_PROPOSED", [("CLOSE_FULL", "market_reduce_only", "1")], "1"),
        ("UPDATE_SL", [("UPDATE_SL", "stop_market_reduce_only", None)], "0"),
    ],
)
def test_steps_per_action(
    action: str, steps: list[tuple[str, str, str | None]], fraction: str
) -> None:
    plan, _ = plan_from_fields(fields(action=action), POLICY, NOW)
    got = [(s.step, s.type, None if s.fraction is None else str(s.fraction)) for s in plan.steps]
    assert got == steps and plan.close_fraction == Decimal(fraction)
    assert all(s.price == Decimal("100.2") for s in plan.steps if s.step == "UPDATE_SL")


def test_plan_id_is_deterministic_not_from_a_clock() -> None:
    a, _ = plan_from_fields(fields(), POLICY, NOW)
    b, _ = plan_from_fields(fields(proposal_id="p2", ts_epoch=NOW - 5), POLICY, NOW + 3)
    c, _ = plan_from_fields(fields(tranche=4), POLICY, NOW)
    assert a.plan_id == b.plan_id != c.plan_id and len(a.plan_id) == 16


def test_sweep_catches_a_missed_event_once(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    now = time.time()
    r.hset(keys.proposal("BTCUSDT"), mapping=fields(ts_epoch=now))
    r.hset(keys.proposal("ETHUSDT"), mapping=fields(symbol="ETHUSDT", ts_epoch=now - 600))

    async def body(ar: Any) -> list[int]:
        planner = Planner(ar, keys, settings, FixedClock(now))
        return [await planner.sweep_once(), await planner.sweep_once()]

    assert arun(body) == [1, 0]
    plans = [f for _i, f in r.xrange(keys.plan_stream)]
    assert [(p["symbol"], p["decision"]) for p in plans] == [("BTCUSDT", "EXECUTE")]
    assert len(r.xrange(keys.decisions)) == 1  # a sweep that finds nothing writes nothing


def test_skip_plans_are_published(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    async def body(ar: Any) -> None:
        planner = Planner(ar, keys, settings, FixedClock(time.time()))
        await planner.handle("1-0", fields(action="HOLD", ts_epoch=time.time()))
        await planner.handle("2-0", {**fields(), "kill_score": "oops"})

    arun(body)
    plans = [f for _i, f in r.xrange(keys.plan_stream)]
    assert [(p["decision"], p["reason_codes"]) for p in plans] == [
        ("SKIP", "hold_action"),
        ("SKIP", "invalid_proposal"),
    ]
    audit = [f for _i, f in r.xrange(keys.decisions)]
    assert "kill_score" in audit[1]["context"]  # what was wrong is on record


def _audit_entries(r: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [{k: v for k, v in f.items() if k != "ts"} for _i, f in r.xrange(keys.decisions)]


@pytest.mark.parametrize("proposal", [fields(), {**fields(), "kill_score": "oops"}])
def test_publish_script_writes_the_audit_entry_the_split_path_writes(
    arun: Any,
    r: redis.Redis,
    keys: Keys,
    settings: Settings,
    prefix: str,
    proposal: dict[str, str],
) -> None:
    """On a plain server the publish script writes the plan's audit entry itself (one call);
    its fields are those of the separate XADD (the Redis Cluster path), new plan and
    duplicate alike, and a duplicate the caller does not audit writes nothing."""
    other = Keys(prefix + "split")

    async def body(ar: Any) -> list[tuple[bool, bool]]:
        now = time.time()
        out = []
        for k, split in ((keys, False), (other, True)):
            planner = Planner(ar, k, settings, FixedClock(now))
            if split:  # the split path, as on a Redis Cluster (audit by XADD)
                planner.steps = ClusterSteps(ar)
            f = {**proposal, "ts_epoch": f"{now - 1:.6f}"}
            plan, _e = plan_from_fields(f, planner.policy, now)
            out.append(
                (
                    await planner.handle("1-0", f) is None,
                    await planner.publish(plan, {"x": 1}, audit_duplicate=False),
                )
            )
            await planner.handle("2-0", f)  # a duplicate, audited
        return out

    assert arun(body) == [(True, False), (True, False)]
    script, split = _audit_entries(r, keys), _audit_entries(r, other)
    assert len(script) == 2 and len(r.xrange(keys.plan_stream)) == 1
    plan_entry = r.xrange(keys.plan_stream)[0][0]
    for got, want in zip(script, split, strict=True):
        ctx, want_ctx = json.loads(got.pop("context")), json.loads(want.pop("context"))
        assert got == want
        assert want_ctx.pop("entry_id") != "" or got["decision"] == "DUPLICATE"
        assert list(ctx)[-1] == "entry_id" and ctx.pop("entry_id") in ("", plan_entry)
        assert ctx == want_ctx
    assert [a["decision"] for a in script] == [
        r.xrange(keys.plan_stream)[0][1]["decision"],
        "DUPLICATE",
    ]
    assert script[1]["reason"] == "duplicate_plan"
    # the new plan's entry names its stream entry; the duplicate's names none
    ctxs = [json.loads(f["context"]) for _i, f in r.xrange(keys.decisions)]
    assert [c["entry_id"] for c in ctxs] == [plan_entry, ""]
    assert all(f["ts"] == f"{float(f['ts']):.6f}" for _i, f in r.xrange(keys.decisions))


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"symbol": "DOGEUSDT"},
        {"kill_score": "0.49"},
        {"action": "HOLD"},
        {"action": "PARTIAL_33"},
        {"ts_epoch": NOW - 61},
        {"action": "UPDATE_SL"},
        {"action": "FULL_CLOSE_PROPOSED"},
        {"action": "PARTIAL_25", "new_sl": None},
    ],
)
def test_a_constructed_plan_is_what_validation_gives(change: dict[str, Any]) -> None:
    """make_plan constructs its plan without validating it again: validating the same
    values gives the same plan, field for field and type for type."""
    plan, _err = plan_from_fields(fields(**change), POLICY, NOW)
    again = Plan.model_validate(dict(plan))
    assert again == plan and again.to_fields() == plan.to_fields()
    assert {k: type(v) for k, v in again.__dict__.items()} == {
        k: type(v) for k, v in plan.__dict__.items()
    }
    assert Plan.from_fields(plan.to_fields()) == plan
