"""The permit wait at scale, and the executor's invariants under random permits (hypothesis)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from permitchain.apply_layer.executor import MAX_ACTIVE
from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan
from permitchain.contract.settings import PermitSignature, Settings
from permitchain.store import async_client
from tests.apply_layer.bench import SYM, Bench, gov_json, p33_json, plan_for

N_PLANS = 500


async def connections(admin: aioredis.Redis, name: str) -> int:
    return sum(1 for c in await admin.client_list() if c.get("name") == name)


def test_many_plans_wait_without_a_connection_each(
    redis_url: str, keys: Keys, settings: Settings
) -> None:
    """500 plans wait at once; the executor's client keeps a small pool (CLIENT LIST)."""
    name = f"pc-exec-{uuid.uuid4().hex[:8]}"
    patient = settings.model_copy(update={"permit_wait_ms": 30_000})
    plans = [plan_for(1000 + i) for i in range(N_PLANS)]

    async def main() -> tuple[int, int, list[str], int]:
        r = aioredis.Redis.from_url(
            redis_url, decode_responses=True, client_name=name, max_connections=64
        )
        admin = async_client(redis_url)
        try:
            async with Bench(r, keys, patient) as b:
                tasks = [asyncio.create_task(b.handle(p)) for p in plans]
                await b.until_waiting(*(p.plan_id for p in plans))
                waiting = await connections(admin, name)
                for p in plans:
                    await b.gov(p)
                    await b.p33(p, qty="0.001")
                await asyncio.gather(*tasks)
                after = await connections(admin, name)
                statuses = [f["status"] for _i, f in await r.xrange(keys.result_stream)]
                return waiting, after, statuses, len(await b.fills())
        finally:
            await r.aclose()
            await admin.aclose()

    waiting, after, statuses, fills = asyncio.run(main())
    assert 1 <= waiting <= MAX_ACTIVE + 2, waiting  # the event reader + a few, not 500
    assert after <= MAX_ACTIVE + 2, after
    assert statuses == ["filled"] * N_PLANS and fills == N_PLANS


GK, PK = "gk", "pk"
GOV_KINDS = [
    "grant",
    "deny",
    "wrong_plan",
    "wrong_symbol",
    "bad_json",
    "expired",
    "bad_sig",
    "absent",
]
P33_KINDS = [
    "allow",
    "deny",
    "wrong_plan",
    "wrong_symbol",
    "bad_json",
    "expired",
    "bad_sig",
    "absent",
]
TRANCHE = itertools.count(10_000)


def gov_permit(kind: str, plan: Plan, other: Plan) -> str | None:
    return {
        "grant": lambda: gov_json(plan, key=GK),
        "deny": lambda: gov_json(plan, granted=False, key=GK),
        "wrong_plan": lambda: gov_json(other, key=GK),
        "wrong_symbol": lambda: gov_json(plan, symbol="ETHUSDT", key=GK),
        "bad_json": lambda: '{"schema":1,',
        "expired": lambda: gov_json(plan, key=GK, ttl_s=-1),
        "bad_sig": lambda: gov_json(plan, key="not-the-key"),
        "absent": lambda: None,
    }[kind]()


def p33_permit(kind: str, plan: Plan, other: Plan, qty: str) -> str | None:
    return {
        "allow": lambda: p33_json(plan, qty=qty, key=PK),
        "deny": lambda: p33_json(plan, allow=False, key=PK),
        "wrong_plan": lambda: p33_json(other, qty=qty, key=PK),
        "wrong_symbol": lambda: p33_json(plan, qty=qty, symbol="ETHUSDT", key=PK),
        "bad_json": lambda: "[]",
        "expired": lambda: p33_json(plan, qty=qty, key=PK, ttl_s=-1),
        "bad_sig": lambda: p33_json(plan, qty=qty, key=GK),
        "absent": lambda: None,
    }[kind]()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    gov_kind=st.sampled_from(GOV_KINDS),
    p33_kind=st.sampled_from(P33_KINDS),
    milli=st.integers(1, 900),
    arrival=st.sampled_from(["before", "gov_first", "p33_first"]),
    dup_permits=st.booleans(),
    dup_handle=st.booleans(),
)
def test_an_order_iff_both_permits_allow(
    redis_url: str,
    keys: Keys,
    settings: Settings,
    gov_kind: str,
    p33_kind: str,
    milli: int,
    arrival: str,
    dup_permits: bool,
    dup_handle: bool,
) -> None:
    s = settings.model_copy(
        update={
            "permit_wait_ms": 250,
            "permit_key_governor": SecretStr(GK),
            "permit_key_p33": SecretStr(PK),
            "permit_signature": PermitSignature.HMAC,
        }
    )
    plan, other = plan_for(next(TRANCHE)), plan_for(next(TRANCHE))
    qty = str(Decimal(milli) / 1000)
    permits = [
        ("governor", gov_permit(gov_kind, plan, other)),
        ("position-brain", p33_permit(p33_kind, plan, other, qty)),
    ]
    if arrival == "p33_first":
        permits.reverse()

    async def write(b: Bench) -> None:
        for layer, raw in permits * (2 if dup_permits else 1):
            if raw is not None:
                await b.permit(plan, layer, raw)

    async def main() -> Any:
        r = async_client(redis_url)
        try:
            async with Bench(r, keys, s) as b:
                if arrival == "before":
                    await write(b)
                runs = [asyncio.create_task(b.handle(plan)) for _ in range(2 if dup_handle else 1)]
                if arrival != "before":
                    await b.until_waiting(plan.plan_id)
                    await write(b)
                await asyncio.gather(*runs)
                await b.handle(plan)  # a redelivery afterwards changes nothing
                position = (await b.sim.fetch_positions([SYM]))[SYM].amt
                return (
                    await b.fills(plan.plan_id),
                    await b.results(plan.plan_id),
                    await b.order(plan.plan_id),
                    position,
                )
        finally:
            await r.aclose()

    fills, results, order, position = asyncio.run(main())
    expected = gov_kind == "grant" and p33_kind == "allow"
    assert len(results) == 1, results
    assert (results[0]["status"] == "filled") is expected, (results, gov_kind, p33_kind)
    assert len(fills) == (1 if expected else 0)
    if expected:
        assert Decimal(fills[0]["qty"]) == Decimal(qty)  # exactly P3.3's safe_close_qty
        assert order["reduce_only"] == "true" and Decimal(order["requested_qty"]) == Decimal(qty)
        assert position == Decimal(1) - Decimal(qty)
    else:
        assert order == {} and position == Decimal(1)
