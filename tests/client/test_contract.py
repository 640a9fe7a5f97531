"""The client's copy of the contract against permitchain's own: key names, plan ids, the
proposal and result fields, the trading state's reading. No server needed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from permitchain.apply_layer.exec_store import open_index
from permitchain.apply_layer.planner import PlannerPolicy, make_plan
from permitchain.contract.keys import Keys
from permitchain.contract.models import SCHEMA, Proposal, Result, make_plan_id
from permitchain.contract.trading_state import parse_trading_state
from permitchain.exit_brain.api import expected_plan_id
from permitchain.runtime.service import ServiceRunner
from permitchain_client import ContractError, SchemaMismatch
from permitchain_client import contract as client_contract
from permitchain_client import messages as client_messages
from permitchain_client.contract import Keys as ClientKeys

POLICY = PlannerPolicy(
    allow_list=frozenset({"BTCUSDT"}),
    kill_score_threshold=Decimal("0.5"),
    proposal_ttl_s=60,
    plan_max_age_s=30,
    mode="testnet",
)


def test_key_names_are_the_chains() -> None:
    ours, theirs = ClientKeys("qx"), Keys("qx")
    plan = "0123456789abcdef"
    assert ours.proposal("BTCUSDT") == theirs.proposal("BTCUSDT")
    assert ours.proposal_stream == theirs.proposal_stream
    assert ours.exec_record(plan) == theirs.exec_record(plan)
    assert ours.result_stream == theirs.result_stream
    assert ours.decisions == theirs.decisions
    assert ours.ledger("BTCUSDT") == theirs.ledger("BTCUSDT")
    assert ours.trading_state == theirs.trading_state
    assert ours.heartbeat("governor") == theirs.heartbeat("governor")
    assert ours.open_index == open_index(theirs)


@given(
    epoch=st.integers(0, 10**6),
    tranche=st.integers(0, 10**12),
    action=st.sampled_from(["PARTIAL_25", "PARTIAL_50", "PARTIAL_75", "FULL_CLOSE_PROPOSED"]),
    executor=st.sampled_from(["builtin", "external"]),
)
def test_proposals_parse_and_plan_ids_match_the_planners(
    epoch: int, tranche: int, action: str, executor: str
) -> None:
    fields = client_contract.proposal_fields(
        "BTCUSDT",
        action,
        kill_score="0.7",
        epoch=epoch,
        tranche=tranche,
        new_sl=None,
        r_net="1.5",
        source="bot",
        executor=executor,
        now=1_700_000_000.0,
    )
    proposal = Proposal.from_fields(fields)
    assert proposal.to_fields() == fields  # written exactly as the chain writes them
    plan = make_plan(proposal, POLICY, now=1_700_000_001.0)
    ours = client_contract.plan_id_of("BTCUSDT", action, epoch, tranche, executor)
    assert plan.is_execute and plan.plan_id == ours == expected_plan_id(proposal)
    assert plan.executor == executor
    assert (ours == make_plan_id("BTCUSDT", action, epoch, tranche)) is (executor == "builtin")


def test_external_update_sl_is_refused_by_the_client_and_skipped_by_the_planner() -> None:
    with pytest.raises(ContractError, match="closes nothing"):
        client_contract.proposal_fields(
            "BTCUSDT",
            "UPDATE_SL",
            kill_score="0.7",
            epoch=0,
            tranche=0,
            new_sl="99",
            r_net=None,
            source="bot",
            executor="external",
        )
    proposal = Proposal(
        proposal_id="p",
        symbol="BTCUSDT",
        action="UPDATE_SL",
        kill_score=Decimal("0.7"),
        new_sl=Decimal(99),
        ts_epoch=1_700_000_000.0,
        executor="external",
    )
    plan = make_plan(proposal, POLICY, now=1_700_000_001.0)
    assert not plan.is_execute and plan.reason_codes == ("external_not_a_close",)


def test_builtin_plans_keep_their_fields() -> None:
    proposal = Proposal(
        proposal_id="p",
        symbol="BTCUSDT",
        action="PARTIAL_50",
        kill_score=Decimal("0.7"),
        ts_epoch=1_700_000_000.0,
    )
    plan = make_plan(proposal, POLICY, now=1_700_000_001.0)
    assert "executor" not in plan.to_fields() and "executor" not in proposal.to_fields()


@pytest.mark.parametrize(
    "raw", [None, "ACTIVE", "REDUCING", "HALTED", "active", " ACTIVE", "", "garbage", b"ACTIVE"]
)
def test_trading_state_reads_as_the_chain_reads_it(raw: object) -> None:
    assert client_contract.parse_trading_state(raw).value == parse_trading_state(raw).value


def test_a_report_is_a_result_the_chain_parses() -> None:
    record = {
        "plan_id": "0123456789abcdef",
        "symbol": "BTCUSDT",
        "qty": "0.031",
        "side": "SELL",
        "client_order_id": "pc-0123456789abcdef",
        "proposal_ts": "1700000000.000000",
        "permit_wait_ms": "3.5",
    }
    fields, state = client_messages.report_fields(
        record,
        status="partially_filled",
        filled_qty="0.02",
        avg_price=Decimal("107.5"),
        order_id="42",
        now=1_700_000_000.25,
    )
    result = Result.from_fields(fields)
    assert state == "filled" and result.executed and result.signed_delta == Decimal("-0.02")
    assert result.to_fields() == fields
    assert result.chain_latency_ms == 250
    audit = client_messages.audit_of_report(fields, "host:1")
    assert json.loads(audit["context"])["result"] == fields
    rejected, state = client_messages.report_fields(
        record, status="rejected", filled_qty="0", avg_price=None, order_id="", now=1.0
    )
    assert state == "rejected" and Result.from_fields(rejected).reason == "exchange_rejected"


def test_heartbeats_name_both_schemas() -> None:
    hb = {"apply-layer": json.dumps({"schema": 1}), "governor": None}
    assert client_contract.check_heartbeats("quantum", hb) == 1
    hb["governor"] = json.dumps({"schema": 3})
    with pytest.raises(SchemaMismatch, match="governor speaks schema 3; permitchain-client "):
        client_contract.check_heartbeats("quantum", hb)


def test_the_chains_heartbeat_declares_a_schema_the_client_speaks() -> None:
    runner = ServiceRunner("apply-layer", None, Keys("qx"))  # type: ignore[arg-type]
    payload = json.loads(runner.heartbeat_payload())
    assert payload["schema"] == SCHEMA
    assert client_contract.check_heartbeats("qx", {"apply-layer": json.dumps(payload)}) == SCHEMA
