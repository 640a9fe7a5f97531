"""The executor's side of the gate, in-process on a real server: an external plan's permits
are consumed by value and their signatures verified exactly as for any plan, and then a
grant is written instead of an order."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis

from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan
from permitchain.contract.settings import PermitSignature, Settings
from tests.apply_layer.bench import Bench, plan_for

GK, PK = "governor-secret", "p33-secret"


def external(tranche: int) -> Plan:
    plan = plan_for(tranche)
    return plan.model_copy(update={"executor": "external"})


def test_signed_permits_make_a_grant_and_no_order(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    signed = settings.model_copy(
        update={"permit_key_governor": SecretStr(GK), "permit_key_p33": SecretStr(PK)}
    )
    plan = external(1)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, signed) as b:
            await b.gov(plan, key=GK)
            await b.p33(plan, key=PK, qty="0.013")
            await b.handle(plan)
            return (
                await b.exec_record(plan.plan_id),
                await b.results(plan.plan_id),
                await b.fills(),
                await r.exists(keys.permit_governor(plan.plan_id)),
                await r.zscore(b.ex.store.open_key, plan.plan_id),
            )

    rec, results, fills, permit_left, listed = arun(body)
    assert rec["state"] == "granted" and rec["executor"] == "external"
    assert (rec["side"], rec["qty"], rec["client_order_id"]) == (
        "SELL",
        "0.013",
        f"pc-{plan.plan_id}",
    )
    assert float(rec["grant_expires_at"]) > float(rec["granted_at"])
    assert results == [] and fills == [] and not permit_left  # consumed, nothing sent
    assert listed is not None  # the resolver will find it if nobody claims it


def test_a_bad_signature_never_makes_a_grant(arun: Any, keys: Keys, settings: Settings) -> None:
    signed = settings.model_copy(
        update={"permit_key_governor": SecretStr(GK), "permit_signature": PermitSignature.HMAC}
    )
    plan = external(2)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, signed) as b:
            await b.gov(plan, key="not-the-key")
            await b.p33(plan)
            await b.handle(plan)
            return await b.exec_record(plan.plan_id), await b.result(plan.plan_id)

    rec, res = arun(body)
    assert rec["state"] == "blocked" and "grant_expires_at" not in rec
    assert (res["reason"], res["error"]) == ("permit_invalid", "governor bad signature")


def test_halted_at_grant_time_blocks(arun: Any, keys: Keys, settings: Settings) -> None:
    plan = external(3)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, settings) as b:
            await b.gov(plan)
            await b.p33(plan)
            await r.set(keys.trading_state, "HALTED")
            await b.handle(plan)
            return await b.result(plan.plan_id)

    assert arun(body)["reason"] == "trading_halted"


def test_a_redelivered_grant_is_left_to_its_rules(
    arun: Any, keys: Keys, settings: Settings
) -> None:
    plan = external(4)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, settings) as b:
            await b.run(plan)
            await b.handle(plan)  # the same plan entry again (a redelivery)
            return await b.exec_record(plan.plan_id), await b.results(plan.plan_id)

    rec, results = arun(body)
    assert rec["state"] == "granted" and results == []
