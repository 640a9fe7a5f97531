"""Every executor reason code of docs/design.md §4, on a real server, with the Executor in-process
and the simulated exchange. Permits are written as the gatekeepers write them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from permitchain.apply_layer.executor import Executor
from permitchain.contract.keys import Keys
from permitchain.contract.models import Plan
from permitchain.contract.settings import ApplyMode, PermitSignature, Settings
from tests.apply_layer.bench import Bench, gov_json, p33_json, plan_for

GK, PK = "governor-secret", "p33-secret"


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"permit_wait_ms": 300})


def spy_verdicts(ex: Executor) -> list[str]:
    """Record every consume verdict the executor sees."""
    seen: list[str] = []
    real = ex.store.consume

    async def consume(plan_id: str, symbol: str, mode: str) -> dict[str, Any]:
        v = await real(plan_id, symbol, mode)
        seen.append(v["verdict"])
        return v

    ex.store.consume = consume  # type: ignore[method-assign]
    return seen


def block_lines(caplog: pytest.LogCaptureFixture, plan: Plan) -> list[str]:
    return [m for m in caplog.messages if m.startswith(f"[PERMIT_WAIT] BLOCK plan={plan.plan_id}")]


def test_both_permits_fill_safe_close_qty(
    arun: Any, keys: Keys, fast: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="permitchain.executor")
    plan = plan_for(1)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            task = asyncio.create_task(b.handle(plan))
            await b.until_waiting(plan.plan_id)
            await b.gov(plan)
            await b.p33(plan, qty="0.013")
            await task
            return (
                await b.result(plan.plan_id),
                await b.fills(plan.plan_id),
                await b.exec_record(plan.plan_id),
                await b.order(plan.plan_id),
            )

    res, fills, rec, order = arun(body)
    assert res["status"] == "filled" and res["executed"] == "true" and res["reason"] == "ok"
    assert res["filled_qty"] == res["requested_qty"] == "0.013" and res["side"] == "SELL"
    assert res["client_order_id"] == f"pc-{plan.plan_id}" and res["reduce_only"] == "true"
    assert [f["qty"] for f in fills] == ["0.013"]
    assert order["reduce_only"] == "true" and order["type"] == "MARKET"
    assert rec["state"] == "filled" and rec["result_id"]
    assert rec["symbol"] == "BTCUSDT" and rec["qty"] == "0.013" and rec["close"] == "true"
    (ok,) = [m for m in caplog.messages if m.startswith("[PERMIT_WAIT] OK")]
    assert ok.startswith(f"[PERMIT_WAIT] OK plan={plan.plan_id} wait_ms=")
    assert ok.endswith(" safe_qty=0.013")


@pytest.mark.parametrize(
    ("present", "verdict"),
    [((), "missing_both"), (("p33",), "missing_governor"), (("governor",), "missing_p33")],
)
def test_missing_permits_wait_then_time_out(
    arun: Any,
    keys: Keys,
    fast: Settings,
    caplog: pytest.LogCaptureFixture,
    present: tuple[str, ...],
    verdict: str,
) -> None:
    caplog.set_level(logging.INFO, logger="permitchain.executor")
    plan = plan_for(2)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            seen = spy_verdicts(b.ex)
            if "governor" in present:
                await b.gov(plan)
            if "p33" in present:
                await b.p33(plan)
            t0 = time.monotonic()
            await b.handle(plan)
            took = time.monotonic() - t0
            return seen, took, await b.result(plan.plan_id), await b.fills()

    seen, took, res, fills = arun(body)
    assert seen[0] == verdict and set(seen[:-1]) == {verdict}
    assert seen[-1] == "permit_timeout"
    assert 0.3 <= took < 1.5
    assert res["status"] == "blocked" and res["reason"] == "permit_timeout"
    assert res["error"] == verdict and res["executed"] == "false"
    assert fills == []
    (line,) = block_lines(caplog, plan)
    gov_ttl = "60" if "governor" in present else "-2"
    p33_ttl = "60" if "p33" in present else "-2"
    assert line == (
        f"[PERMIT_WAIT] BLOCK plan={plan.plan_id} reason=permit_timeout "
        f"gov_ttl={gov_ttl} p33_ttl={p33_ttl}"
    )


@pytest.mark.parametrize(
    ("layer", "reason"), [("governor", "governor_denied"), ("p33", "p33_denied")]
)
def test_a_deny_blocks_at_once(
    arun: Any,
    keys: Keys,
    settings: Settings,
    layer: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="permitchain.executor")
    slow = settings.model_copy(update={"permit_wait_ms": 20_000})
    plan = plan_for(3)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, slow) as b:
            task = asyncio.create_task(b.handle(plan))
            await b.until_waiting(plan.plan_id)
            t0 = time.monotonic()
            if layer == "governor":
                await b.gov(plan, granted=False)
            else:
                await b.p33(plan, allow=False)
            await task
            return time.monotonic() - t0, await b.result(plan.plan_id), await b.fills()

    took, res, fills = arun(body)
    assert took < 1.0  # woken by the permit event, far before the 20 s wait
    assert res["status"] == "blocked" and res["reason"] == reason and fills == []
    (line,) = block_lines(caplog, plan)
    assert line.endswith(
        " gov_ttl=60 p33_ttl=-2" if layer == "governor" else " gov_ttl=-2 p33_ttl=60"
    )


INVALID: dict[str, Callable[[Plan, Plan], tuple[str, str]]] = {
    "wrong_plan": lambda p, o: (gov_json(p), p33_json(o)),
    "wrong_symbol": lambda p, o: (gov_json(p, symbol="ETHUSDT"), p33_json(p)),
    "wrong_schema": lambda p, o: (gov_json(p).replace('"schema":1', '"schema":2'), p33_json(p)),
    "bad_json": lambda p, o: (gov_json(p), "{not json"),
    "unsigned_with_keys": lambda p, o: (gov_json(p), p33_json(p)),
    "bad_signature": lambda p, o: (gov_json(p, key=GK), p33_json(p, key="forged")),
    "swapped_keys": lambda p, o: (gov_json(p, key=PK), p33_json(p, key=GK)),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_permits_block(arun: Any, keys: Keys, fast: Settings, case: str) -> None:
    signed = fast.model_copy(
        update={
            "permit_key_governor": SecretStr(GK),
            "permit_key_p33": SecretStr(PK),
            "permit_signature": PermitSignature.HMAC,
        }
    )
    plan, other = plan_for(4), plan_for(5)
    g, p = INVALID[case](plan, other)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, signed) as b:
            await b.permit(plan, "governor", g)
            await b.permit(plan, "position-brain", p)
            await b.handle(plan)
            return (
                await b.result(plan.plan_id),
                await b.fills(),
                await b.exec_record(plan.plan_id),
            )

    res, fills, rec = arun(body)
    assert res["status"] == "blocked" and res["reason"] == "permit_invalid", res
    assert fills == [] and rec["state"] == "blocked"


def test_signed_permits_execute(arun: Any, keys: Keys, fast: Settings) -> None:
    signed = fast.model_copy(
        update={
            "permit_key_governor": SecretStr(GK),
            "permit_key_p33": SecretStr(PK),
            "permit_signature": PermitSignature.HMAC,
        }
    )
    plan = plan_for(6)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, signed) as b:
            await b.gov(plan, key=GK)
            await b.p33(plan, key=PK)
            await b.handle(plan)
            return await b.result(plan.plan_id)

    assert arun(body)["status"] == "filled"


def test_already_executed_never_twice(
    arun: Any, keys: Keys, fast: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="permitchain.executor")
    plan = plan_for(7)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            seen = spy_verdicts(b.ex)
            await b.run(plan)
            # redelivered, with fresh permits written again: nothing more happens
            await r.delete(keys.permit_governor(plan.plan_id), keys.permit_p33(plan.plan_id))
            await b.run(plan)
            return seen, await b.results(plan.plan_id), await b.fills()

    seen, results, fills = arun(body)
    assert seen == ["ok", "already_executed"]
    assert [r["status"] for r in results] == ["filled"] and len(fills) == 1
    assert f"[PERMIT_WAIT] SKIP plan={plan.plan_id} reason=already_executed state=filled" in (
        caplog.messages
    )


def test_exchange_rejected(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(8)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.sim.set_fault(order_mode="reject")
            await b.run(plan)
            return (
                await b.result(plan.plan_id),
                await b.fills(),
                await b.exec_record(plan.plan_id),
            )

    res, fills, rec = arun(body)
    assert res["status"] == "rejected" and res["reason"] == "exchange_rejected"
    assert res["executed"] == "false" and "-2019" in res["error"] and fills == []
    assert rec["state"] == "rejected"


def test_quantity_above_position_is_rejected_by_reduce_only(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    plan = plan_for(9)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.run(plan, qty="5")  # more than the 1.0 position: reduce-only refuses
            return await b.result(plan.plan_id), await b.fills()

    res, fills = arun(body)
    assert res["status"] == "rejected" and res["reason"] == "exchange_rejected" and fills == []


def test_exchange_unknown_then_resolved(arun: Any, keys: Keys, fast: Settings) -> None:
    """Timeout, nothing on the exchange: the plan waits in state unknown (no result, never a
    re-send); the resolver writes its one result: a final unknown once it gives up."""
    plan = plan_for(10)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.sim.set_fault(order_mode="timeout")
            await b.run(plan)
            first = await b.results(plan.plan_id)
            state = (await b.exec_record(plan.plan_id))["state"]
            await b.sim.clear_faults()
            b.ex.resolver.give_up_s = 3600
            assert await b.ex.resolver.resolve_due(float("inf")) == 1  # still nothing: waits
            waiting = await b.results(plan.plan_id)
            b.ex.resolver.give_up_s = 0
            await b.ex.resolver.resolve_due(float("inf"))
            await b.ex.resolver.resolve_due(float("inf"))  # nothing left: no second result
            return first, state, waiting, await b.results(plan.plan_id), await b.fills()

    first, state, waiting, results, fills = arun(body)
    assert first == [] and waiting == [] and state == "unknown"
    assert [(r["status"], r["reason"], r["executed"]) for r in results] == [
        ("unknown", "exchange_unknown", "false")
    ]
    assert fills == []


def test_order_still_new_is_unknown_until_filled(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(11)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.sim.set_fault(order_mode="new")
            await b.run(plan)
            first = await b.results(plan.plan_id), await b.exec_record(plan.plan_id)
            await b.ex.resolver.resolve_due(float("inf"))  # still NEW: nothing new
            # the exchange fills the order later
            order_key = keys.sim_order("BTCUSDT", f"pc-{plan.plan_id}")
            await r.hset(
                order_key,
                mapping={
                    "status": "FILLED",
                    "filled_qty": "0.01",  # type: ignore[misc]
                    "avg_price": "107",
                },
            )
            await b.ex.resolver.resolve_due(float("inf"))
            await b.ex.resolver.resolve_due(float("inf"))
            return first, await b.results(plan.plan_id), await b.exec_record(plan.plan_id)

    (first, first_rec), results, rec = arun(body)
    assert first == [] and first_rec["state"] == "unknown"  # never reported filled while NEW
    assert [(r["status"], r["executed"], r["filled_qty"]) for r in results] == [
        ("filled", "true", "0.01")
    ]
    assert rec["state"] == "filled"
    assert not arun(lambda r: r.zscore(f"{keys.prefix}:apply:exec_open", plan.plan_id))


def test_lost_response_is_looked_up_not_resent(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(12)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.sim.set_fault(order_mode="lose_response")
            await b.run(plan)
            return await b.results(plan.plan_id), await b.fills()

    results, fills = arun(body)
    assert [(r["status"], r["filled_qty"]) for r in results] == [("filled", "0.01")]
    assert len(fills) == 1


@pytest.mark.parametrize("state", ["HALTED", "garbage", "HASH"])
def test_trading_halted_at_order_time(arun: Any, keys: Keys, fast: Settings, state: str) -> None:
    plan = plan_for(13)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.gov(plan)
            await b.p33(plan)
            if state == "HASH":  # a wrong key type is HALTED too, never a crash
                await r.hset(keys.trading_state, mapping={"state": "ACTIVE"})
            else:
                await r.set(keys.trading_state, state)
            await b.handle(plan)
            return await b.result(plan.plan_id), await b.fills()

    res, fills = arun(body)
    assert res["status"] == "blocked" and res["reason"] == "trading_halted" and fills == []


def test_submit_after_a_script_flush_loads_the_script_and_sends_once(
    arun: Any, keys: Keys, fast: Settings
) -> None:
    """The trading-state read and the move to submitted go out together; a server that lost
    the script (NOSCRIPT: the move did not run) gets it again and the move runs once."""
    plan = plan_for(31)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.gov(plan)
            await b.p33(plan)
            store = b.ex.store
            consume = store.consume

            async def consume_then_flush(*a: Any) -> Any:
                verdict = await consume(*a)
                await r.script_flush()  # the server forgets every script before the submit
                return verdict

            store.consume = consume_then_flush  # type: ignore[method-assign]
            await b.handle(plan)
            return await b.result(plan.plan_id), await b.fills(), await b.exec_record(plan.plan_id)

    res, fills, record = arun(body)
    assert res["status"] == "filled" and len(fills) == 1 and record["state"] == "filled"


def test_plan_expired(arun: Any, keys: Keys, fast: Settings) -> None:
    plan = plan_for(14, now=time.time() - 120)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, fast) as b:
            await b.run(plan)
            return await b.result(plan.plan_id), await b.fills()

    res, fills = arun(body)
    assert res["status"] == "blocked" and res["reason"] == "plan_expired" and fills == []


def test_dry_run_runs_everything_but_the_order(arun: Any, keys: Keys, fast: Settings) -> None:
    dry = fast.model_copy(update={"apply_mode": ApplyMode.DRY_RUN})
    plan = plan_for(15)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, dry) as b:
            await b.run(plan)
            return (
                await b.result(plan.plan_id),
                await b.fills(),
                await b.exec_record(plan.plan_id),
            )

    res, fills, rec = arun(body)
    assert res["status"] == "dry_run" and res["executed"] == "false"
    assert res["requested_qty"] == "0.01" and fills == [] and rec["state"] == "dry_run"


@pytest.mark.parametrize(("gov_signed", "status"), [(True, "filled"), (False, "blocked")])
def test_each_configured_key_is_enforced(
    arun: Any, keys: Keys, fast: Settings, gov_signed: bool, status: str
) -> None:
    only_gov = fast.model_copy(
        update={"permit_key_governor": SecretStr(GK), "permit_signature": PermitSignature.HMAC}
    )
    plan = plan_for(16)

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, only_gov) as b:
            await b.gov(plan, key=GK if gov_signed else None)
            await b.p33(plan)  # unsigned: P3.3 has no key configured
            await b.handle(plan)
            return await b.result(plan.plan_id)

    res = arun(body)
    assert res["status"] == status
    if not gov_signed:
        assert (res["reason"], res["error"]) == ("permit_invalid", "governor bad signature")
