"""Permit events save work, never decide: a plan added after the event reader started is
consumed once both gatekeepers announced their permit (one consume per plan), and without
events it still executes, at the deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from tests.apply_layer.bench import Bench, gov_json, p33_json, plan_for
from tests.apply_layer.test_executor_reasons import spy_verdicts


def fresh_id() -> str:
    """A plan-stream entry id from after the event reader started (server ms ≈ wall ms)."""
    return f"{int(time.time() * 1000) + 5_000}-0"


def test_a_fresh_plan_is_consumed_once_after_both_events(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    plan = plan_for(31)
    patient = settings.model_copy(update={"permit_wait_ms": 5_000})

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, patient) as b:
            seen = spy_verdicts(b.ex)
            task = asyncio.create_task(b.ex.handle(fresh_id(), plan.to_fields()))
            await b.until_waiting(plan.plan_id)
            await b.gov(plan)  # one event: not yet worth a consume
            await b.p33(plan)
            await task
            return seen, await b.result(plan.plan_id)

    seen, res = arun(body)
    assert seen == ["ok"]  # one consume, after both events
    assert res["status"] == "filled"


def test_a_redelivered_plan_is_tried_at_once(arun: Any, keys: Keys, settings: Settings) -> None:
    """An old entry (its events may predate the reader) is tried before any event."""
    plan = plan_for(32)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, settings) as b:
            seen = spy_verdicts(b.ex)
            await b.gov(plan)
            await b.p33(plan)  # events read before the plan: remembered, and not needed
            await b.ex.handle("1-0", plan.to_fields())
            return seen, await b.result(plan.plan_id)

    seen, res = arun(body)
    assert seen == ["ok"] and res["status"] == "filled"


def test_without_events_a_fresh_plan_still_executes_at_the_deadline(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    """Permits written with no event (a lost event, a trimmed stream): the final consume at
    APPLY_PERMIT_WAIT_MS finds them, by value, and the plan executes."""
    plan = plan_for(33)
    fast = settings.model_copy(update={"permit_wait_ms": 300})

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            seen = spy_verdicts(b.ex)
            await r.set(keys.permit_governor(plan.plan_id), gov_json(plan), ex=60)
            await r.set(keys.permit_p33(plan.plan_id), p33_json(plan), ex=60)
            t0 = time.monotonic()
            await b.ex.handle(fresh_id(), plan.to_fields())
            return seen, time.monotonic() - t0, await b.result(plan.plan_id)

    seen, took, res = arun(body)
    assert seen == ["ok"] and took >= 0.3  # no try before the deadline, then the final one
    assert res["status"] == "filled"
