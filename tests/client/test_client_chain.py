"""permitchain-client against the real chain (services as processes, simulated exchange):
it writes exactly the proposal the planner expects, follows the plan to its one result, and
reads what the chain records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal, Result
from permitchain.exit_brain.api import expected_plan_id
from permitchain_client import (
    AsyncClient,
    ChainUnavailable,
    Client,
    ContractError,
    SchemaMismatch,
    TradingState,
)

from .conftest import SYMBOL, Running, wait_ledger

pytestmark = pytest.mark.slow


def test_propose_wait_result_explain(start_chain: Callable[..., Running], r: redis.Redis) -> None:
    run = start_chain()
    client, keys = run.client, run.keys
    plan_id = client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=1)
    result = client.wait_result(plan_id, timeout=20)
    assert result.status == "filled" and result.executed and result.side == "SELL"
    assert result.filled_qty == Decimal("0.031")
    assert result.client_order_id == f"pc-{plan_id}"
    # the proposal on the stream is the contract's, field for field, and its plan id the
    # planner's
    (_id, fields), *_ = r.xrange(keys.proposal_stream)
    proposal = Proposal.from_fields(fields)
    assert proposal.to_fields() == fields and proposal.source == "test-bot"
    assert expected_plan_id(proposal) == plan_id
    # the result parses as the chain's own model
    (_rid, raw), *_ = r.xrange(keys.result_stream)
    assert Result.from_fields(raw).filled_qty == result.filled_qty
    assert wait_ledger(r, keys, "0.031") == "0.031"
    # a result already written is returned at once
    assert client.wait_result(plan_id, timeout=1) == result
    why = client.explain(plan_id)
    assert why.state == "filled"
    layers = [(e.layer, e.decision) for e in why.audit]
    assert ("planner", "EXECUTE") in layers and ("executor", "EXECUTED") in layers
    assert {e.layer for e in why.audit} >= {"planner", "governor", "position-brain", "executor"}


def test_a_skipped_proposal_is_a_result_not_a_timeout(start_chain: Callable[..., Running]) -> None:
    run = start_chain()
    plan_id = run.client.propose(SYMBOL, "PARTIAL_25", kill_score="0.2", tranche=2)
    result = run.client.wait_result(plan_id, timeout=20)
    assert result.status == "skipped" and result.reason == "below_kill_score_threshold"
    assert not result.executed and result.filled_qty == 0


def test_async_client_same_flow(start_chain: Callable[..., Running]) -> None:
    run = start_chain()

    async def body() -> tuple[str, str, TradingState]:
        async with AsyncClient.from_url(run.url, key_prefix=run.keys.prefix) as client:
            plan_id = await client.propose(SYMBOL, "PARTIAL_25", kill_score="0.9", tranche=3)
            result = await client.wait_result(plan_id, timeout=20)
            why = await client.explain(plan_id)
            return result.status, why.state, await client.trading_state()

    status, state, trading = asyncio.run(body())
    assert (status, state, trading) == ("filled", "filled", TradingState.ACTIVE)


def test_trading_state_is_read_fail_closed(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    client = Client.from_url(redis_url, key_prefix=keys.prefix)
    assert client.trading_state() is TradingState.ACTIVE  # absent
    r.set(keys.trading_state, "REDUCING")
    assert client.trading_state() is TradingState.REDUCING
    r.set(keys.trading_state, "halted ")  # not one of the three names
    assert client.trading_state() is TradingState.HALTED
    r.delete(keys.trading_state)
    r.hset(keys.trading_state, "x", "1")  # wrong key type
    assert client.trading_state() is TradingState.HALTED


def heartbeat(r: redis.Redis, keys: Keys, service: str, **extra: object) -> None:
    r.set(keys.heartbeat(service), json.dumps({"service": service, "pid": 1, **extra}))


def test_schema_refusals_name_both(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    client = Client.from_url(redis_url, key_prefix=keys.prefix)
    with pytest.raises(ChainUnavailable, match="no apply-layer heartbeat"):
        client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7")
    heartbeat(r, keys, "apply-layer", schema=1)
    heartbeat(r, keys, "governor", schema=2)
    with pytest.raises(
        SchemaMismatch,
        match=r"governor speaks schema 2; permitchain-client "
        r"1\.0\.0 speaks schema 1",
    ):
        client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7")
    heartbeat(r, keys, "governor")  # a chain from before heartbeats carried the schema
    with pytest.raises(SchemaMismatch, match="declares no schema"):
        client.propose(SYMBOL, "PARTIAL_50", kill_score="0.7")
    assert not r.exists(keys.proposal_stream)  # nothing was written


def test_bad_input_is_one_clear_error_and_writes_nothing(
    r: redis.Redis, keys: Keys, redis_url: str
) -> None:
    heartbeat(r, keys, "apply-layer", schema=1)
    client = Client.from_url(redis_url, key_prefix=keys.prefix)
    bad: list[tuple[dict[str, object], str]] = [
        ({"symbol": "btc/usdt"}, "symbol"),
        ({"action": "SELL"}, "action"),
        ({"kill_score": 0.7}, "kill_score: pass a decimal string"),
        ({"kill_score": "1.5"}, "between 0 and 1"),
        ({"tranche": -1}, "tranche"),
        ({"action": "UPDATE_SL"}, "new_sl"),
        ({"action": "HOLD", "executor": "external"}, "closes nothing"),
        ({"executor": "mine"}, "executor"),
    ]
    for change, message in bad:
        args: dict[str, object] = {
            "symbol": SYMBOL,
            "action": "PARTIAL_50",
            "kill_score": "0.7",
            **change,
        }
        symbol, action = str(args.pop("symbol")), str(args.pop("action"))
        with pytest.raises(ContractError, match=message):
            client.propose(symbol, action, **args)  # type: ignore[arg-type]
    assert not r.exists(keys.proposal_stream)
