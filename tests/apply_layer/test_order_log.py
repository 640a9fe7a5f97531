"""The executor logs each order twice, grep-able: ``[ORDER] SENT`` as it goes to the exchange
and ``[ORDER] OUTCOME`` once its outcome is known, with plan, symbol, side, qty, client
order id, status and latency."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from redis.asyncio import Redis

from permitchain.apply_layer.orders import client_order_id
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from tests.apply_layer.bench import SYM, Bench, plan_for


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"permit_wait_ms": 300})


def order_lines(caplog: pytest.LogCaptureFixture, plan_id: str) -> list[dict[str, str]]:
    """Each ``[ORDER]`` line of the plan as its event and key=value fields."""
    out = []
    for rec in caplog.records:
        msg = rec.getMessage()
        if msg.startswith("[ORDER] ") and f"plan={plan_id}" in msg:
            event, _, rest = msg.removeprefix("[ORDER] ").partition(" ")
            out.append({"event": event, **dict(re.findall(r"(\w+)=(\S+)", rest))})
    return out


@pytest.mark.parametrize(("fault", "status"), [(None, "filled"), ("reject", "rejected")])
def test_an_order_and_its_outcome_are_logged(
    arun: Any,
    keys: Keys,
    fast: Settings,
    caplog: pytest.LogCaptureFixture,
    fault: str | None,
    status: str,
) -> None:
    plan = plan_for(41)
    caplog.set_level(logging.INFO, logger="permitchain.executor")

    async def body(r: Redis) -> None:
        async with Bench(r, keys, fast) as b:
            if fault:
                await b.sim.set_fault(order_mode=fault)
            await b.run(plan, qty="0.01")
            await b.result(plan.plan_id)

    arun(body)
    lines = order_lines(caplog, plan.plan_id)
    assert [x["event"] for x in lines] == ["SENT", "OUTCOME"]
    outcome = lines[1]
    coid = client_order_id(plan.plan_id)
    for line in lines:
        assert line["symbol"] == SYM and line["side"] == "SELL" and line["qty"] == "0.01"
        assert line["client_order_id"] == coid
    assert outcome["status"] == status and outcome["latency_ms"].isdigit()
    assert outcome["filled_qty"] == ("0.01" if status == "filled" else "0")
