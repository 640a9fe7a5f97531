"""The planner publishes a plan once: dedupe key and XADD in one script."""

from __future__ import annotations

import time
from typing import Any

import redis

from permitchain.apply_layer.planner_service import Planner
from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal
from permitchain.contract.settings import Settings
from permitchain.runtime.clock import FixedClock


def proposal(**kw: Any) -> Proposal:
    base: dict[str, Any] = dict(
        proposal_id="p1",
        symbol="BTCUSDT",
        action="PARTIAL_75",
        kill_score="0.539",
        position_epoch=1,
        tranche=3,
        ts_epoch=time.time(),
    )
    return Proposal(**{**base, **kw})


def test_same_proposal_twice_is_one_plan(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    async def body(ar: Any) -> list[bool]:
        planner = Planner(ar, keys, settings, FixedClock(time.time()))
        f = proposal().to_fields()
        await planner.handle("1-0", f)
        # the same decision published again, even as a new proposal id, is the same plan
        await planner.handle("2-0", {**f, "proposal_id": "p2"})
        return []

    arun(body)
    plans = r.xrange(keys.plan_stream)
    assert len(plans) == 1
    assert plans[0][1]["decision"] == "EXECUTE"
    audit = [f for _i, f in r.xrange(keys.decisions)]
    assert [a["reason"] for a in audit] == ["plan_ok", "duplicate_plan"]
    assert r.ttl(keys.dedupe(plans[0][1]["plan_id"])) > 0


def test_a_skip_never_shadows_a_later_execute(
    arun: Any, r: redis.Redis, keys: Keys, settings: Settings
) -> None:
    async def body(ar: Any) -> None:
        planner = Planner(
            ar,
            keys,
            settings.model_copy(update={"kill_score_threshold": 0.6}),
            FixedClock(time.time()),
        )
        await planner.handle("1-0", proposal(kill_score="0.55").to_fields())
        await planner.handle("2-0", proposal(kill_score="0.65").to_fields())

    arun(body)
    decisions = [f["decision"] for _i, f in r.xrange(keys.plan_stream)]
    assert decisions == ["SKIP", "EXECUTE"]
