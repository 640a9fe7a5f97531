"""The gate for external executors against the real chain: a grant claimed exactly once,
by value; the bot's report is the plan's one result and P3.3's ledger follows it; what
cannot be claimed or reported is refused, as data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis

from permitchain.contract.models import Result
from permitchain.exchange.sim import SimExchange
from permitchain_client import AsyncClient, ClaimVerdict, ContractError

from .conftest import SYMBOL, Running, wait_ledger

pytestmark = pytest.mark.slow


def place(run: Running, qty: Decimal, coid: str) -> str:
    """The bot's own order: reduce-only, on the (simulated) exchange, with the gate's id."""

    async def send(sim: SimExchange) -> str:
        order = await sim.place_reduce_only_market(SYMBOL, "SELL", qty, coid)
        return order.order_id

    return str(run.sim(send))


def results(r: redis.Redis, run: Running, plan_id: str) -> list[dict[str, str]]:
    return [f for _i, f in r.xrange(run.keys.result_stream) if f["plan_id"] == plan_id]


def test_claim_once_send_report_and_the_ledger_follows(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain()
    client, gate, keys = run.client, run.client.gate, run.keys
    plan_id = client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=1, executor="external")
    claim = gate.claim(plan_id, timeout=20)
    assert claim.verdict is ClaimVerdict.OK
    assert (claim.side, claim.qty, claim.client_order_id) == (
        "SELL",
        Decimal("0.031"),
        f"pc-{plan_id}",
    )
    # the executor consumed both permits and sent nothing itself
    assert not r.exists(keys.permit_governor(plan_id), keys.permit_p33(plan_id))
    assert r.xlen(keys.sim_fills) == 0
    # a second claim, from this client or another, is already_executed
    again = gate.claim(plan_id, timeout=1)
    assert again.verdict is ClaimVerdict.ALREADY_EXECUTED and again.qty is None
    assert claim.qty is not None
    order_id = place(run, claim.qty, claim.client_order_id)
    report = gate.report(plan_id, "filled", claim.qty, avg_price="107", order_id=order_id)
    assert report.accepted and report.state == "filled"
    (raw,) = results(r, run, plan_id)  # the plan's one result, as the chain's model reads it
    result = Result.from_fields(raw)
    assert (result.filled_qty, result.side, result.client_order_id, result.order_id) == (
        Decimal("0.031"),
        "SELL",
        f"pc-{plan_id}",
        order_id,
    )
    assert client.wait_result(plan_id, timeout=1).status == "filled"
    assert wait_ledger(r, keys, "0.031") == "0.031"  # P3.3 applied it
    # reported once: a second report is refused and writes nothing
    twice = gate.report(plan_id, "filled", claim.qty, avg_price="107", order_id=order_id)
    assert not twice.accepted and twice.reason == "already_reported"
    assert len(results(r, run, plan_id)) == 1
    decisions = [(e.layer, e.decision) for e in client.explain(plan_id).audit]
    assert ("executor", "GRANTED") in decisions and ("gate", "CLAIMED") in decisions


def test_unclaimed_grant_is_blocked_and_reports_are_refused(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain(GATE_CLAIM_S="1")
    client, gate = run.client, run.client.gate
    assert not gate.report("0123456789abcdef", "filled", "0.01").accepted  # no such plan
    plan_id = client.propose(SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=2, executor="external")
    deadline = time.monotonic() + 20
    while r.hget(run.keys.exec_record(plan_id), "state") != "granted":
        assert time.monotonic() < deadline, "never granted"
        time.sleep(0.02)
    refused = gate.report(plan_id, "filled", "0.01")  # granted, not claimed
    assert not refused.accepted and refused.reason == "not_claimed"
    # nobody claims: the resolver blocks the plan once the grant expired
    result = client.wait_result(plan_id, timeout=30)
    assert (result.status, result.reason) == ("blocked", "gate_not_claimed")
    late = gate.claim(plan_id, timeout=1)
    assert late.verdict is ClaimVerdict.BLOCKED and late.reason == "gate_not_claimed"
    assert r.xlen(run.keys.sim_fills) == 0


def test_claims_refused_by_value_by_kill_switch_and_for_builtin_plans(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain(GATE_CLAIM_S="30")
    client, gate, keys = run.client, run.client.gate, run.keys
    plan_id = client.propose(SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=3, executor="external")
    wrong = gate.claim(plan_id, symbol="ETHUSDT", timeout=20)
    assert wrong.verdict is ClaimVerdict.MISMATCH
    r.set(keys.trading_state, "HALTED")
    halted = gate.claim(plan_id, timeout=1)
    assert halted.verdict is ClaimVerdict.TRADING_HALTED and halted.state == "granted"
    r.set(keys.trading_state, "garbage")  # unreadable counts as HALTED
    assert gate.claim(plan_id, timeout=1).verdict is ClaimVerdict.TRADING_HALTED
    r.delete(keys.trading_state)
    assert gate.claim(plan_id, timeout=1).verdict is ClaimVerdict.OK
    # a plan for permitchain's own executor cannot be claimed
    builtin = client.propose(SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=4)
    assert client.wait_result(builtin, timeout=20).status in ("filled", "blocked")
    assert gate.claim(builtin, timeout=1).verdict in (
        ClaimVerdict.NOT_EXTERNAL,
        ClaimVerdict.BLOCKED,
    )


def test_bad_reports_are_refused_before_anything_is_written(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain()
    gate = run.client.gate
    plan_id = run.client.propose(
        SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=5, executor="external"
    )
    claim = gate.claim(plan_id, timeout=20)
    assert claim.ok and claim.qty == Decimal("0.015")
    for args, message in [
        (("filled", "0.016"), "outside 0..0.015"),
        (("unknown", "0"), "do not report"),
        (("rejected", "0.01"), "filled nothing"),
        (("filled", 0.01), "decimal string"),
    ]:
        with pytest.raises(ContractError, match=message):
            gate.report(plan_id, *args)  # type: ignore[arg-type]
    assert results(r, run, plan_id) == []
    assert gate.report(plan_id, "rejected", "0").accepted
    assert run.client.wait_result(plan_id, timeout=1).status == "rejected"


def test_a_denied_plan_names_the_gatekeepers_reason(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain()
    r.set(run.keys.trading_state, "HALTED")  # the governor denies every plan
    plan_id = run.client.propose(
        SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=6, executor="external"
    )
    claim = run.client.gate.claim(plan_id, timeout=20)
    assert claim.verdict is ClaimVerdict.BLOCKED
    assert (claim.reason, claim.detail) == ("governor_denied", "trading_halted")
    assert r.xlen(run.keys.sim_fills) == 0


def test_dry_run_chain_grants_nothing(start_chain: Callable[..., Running], r: redis.Redis) -> None:
    run = start_chain(APPLY_MODE="dry_run")
    plan_id = run.client.propose(
        SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=7, executor="external"
    )
    assert run.client.gate.claim(plan_id, timeout=20).verdict is ClaimVerdict.DRY_RUN
    assert run.client.wait_result(plan_id, timeout=1).status == "dry_run"


def test_async_gate_claims_and_reports(start_chain: Callable[..., Running], r: redis.Redis) -> None:
    run = start_chain()

    async def body() -> tuple[str, str, bool, str]:
        async with AsyncClient.from_url(run.url, key_prefix=run.keys.prefix) as client:
            plan_id = await client.propose(
                SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=8, executor="external"
            )
            claim = await client.gate.claim(plan_id, timeout=20)
            assert claim.ok and claim.qty is not None
            order_id = await asyncio.to_thread(place, run, claim.qty, claim.client_order_id)
            report = await client.gate.report(plan_id, "filled", claim.qty, "107", order_id)
            again = await client.gate.claim(plan_id, timeout=1)
            result = await client.wait_result(plan_id, timeout=5)
            return plan_id, again.verdict.value, report.accepted, result.status

    plan_id, again, accepted, status = asyncio.run(body())
    assert (again, accepted, status) == ("already_executed", True, "filled")
    assert len(results(r, run, plan_id)) == 1
    assert wait_ledger(r, run.keys, "0.031") == "0.031"
