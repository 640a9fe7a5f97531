"""The apply layer's metrics (served on :8043): names and labels operators graph."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from redis.asyncio import Redis

from permitchain.apply_layer.planner_service import Planner
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.runtime.clock import FixedClock
from tests.apply_layer.bench import Bench, plan_for
from tests.apply_layer.test_planner import fields


def test_metric_names_and_labels(arun: Any, keys: Keys, settings: Settings) -> None:
    plan = plan_for(1)

    async def body(r: Redis) -> None:
        await Planner(r, keys, settings, FixedClock(time.time())).handle(
            "1-0", fields(ts_epoch=time.time(), action="HOLD")
        )
        async with Bench(r, keys, settings) as b:
            await b.run(plan)

    arun(body)
    text = generate_latest(REGISTRY).decode()
    for needle in (
        'apply_plans_total{decision="SKIP",reason="hold_action",symbol="BTCUSDT"}',
        'apply_permit_wait_seconds_bucket{le="0.5"}',
        "apply_chain_latency_seconds_count ",
        'apply_executions_total{reason="ok",status="filled",symbol="BTCUSDT"}',
    ):
        assert needle in text, needle
