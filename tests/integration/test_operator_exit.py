"""Public-key permits and the operator's emergency exit with the services as processes:
a forged allow for a plan P3.3 denies executes nothing; under HALTED a ``flatten`` fills while
an exit-brain proposal made in the same second is denied ``trading_halted``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from permitchain.apply_layer.planner_service import publish_plan
from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, P33Allow, Plan, Proposal, make_plan_id
from permitchain.contract.signing import P33, Ed25519Signer, HmacSigner, Signer
from permitchain.exit_brain.api import current_epoch, new_proposal_id, submit_proposal
from permitchain.keyfiles import generate, load_private
from permitchain.operator_exit import flatten_plan
from permitchain.runtime.permits import permit_json
from permitchain.scenario import EXCHANGE_AMT, SYMBOL, audit_for, seed, wait_result, wait_snapshot
from permitchain.store import async_client

pytestmark = pytest.mark.slow


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    generate(tmp_path / "keys")
    return tmp_path / "keys"


def cli(chain: Chain, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env={**chain.child_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def propose(r: Redis, keys: Keys, action: Action, tranche: int, source: str) -> str:
    epoch = await current_epoch(r, keys, SYMBOL)
    p = Proposal(
        proposal_id=new_proposal_id(),
        symbol=SYMBOL,
        action=action.value,
        kill_score=Decimal("0.7"),
        position_epoch=epoch,
        tranche=tranche,
        ts_epoch=time.time(),
        source=source,
    )
    await submit_proposal(r, keys, p, ttl_s=60)
    return make_plan_id(SYMBOL, action.value, epoch, tranche)


def p33_allow(plan_id: str, symbol: str = SYMBOL) -> P33Allow:
    now = time.time()
    return P33Allow(
        plan_id=plan_id,
        symbol=symbol,
        safe_close_qty=EXCHANGE_AMT,
        side="LONG",
        exchange_position_amt=EXCHANGE_AMT,
        ledger_position_amt=EXCHANGE_AMT,
        snapshot_age_sec=Decimal(0),
        created_at=now,
        expires_at=now + 60,
    )


def forge(kind: str, plan_id: str, p33_key: Signer) -> str:
    """A P3.3 allow for ``plan_id`` as someone without P3.3's private key could make it."""
    if kind == "fresh key":
        return permit_json(p33_allow(plan_id), Ed25519Signer.of(P33, Ed25519PrivateKey.generate()))[
            0
        ]
    if kind == "hmac":
        return permit_json(p33_allow(plan_id), HmacSigner("p33-secret"))[0]
    if kind == "unsigned":
        return p33_allow(plan_id).to_json()
    if kind == "right key, another plan":
        return permit_json(p33_allow("0123456789abcdef"), p33_key)[0]
    if kind == "right key, another symbol":
        return permit_json(p33_allow(plan_id, "ETHUSDT"), p33_key)[0]
    # "right key, edited": signed for another plan, its plan id then changed to this one
    obj = json.loads(permit_json(p33_allow("0123456789abcdef"), p33_key)[0])
    return json.dumps({**obj, "plan_id": plan_id})


FORGERIES = [
    "fresh key",
    "hmac",
    "unsigned",
    "right key, another plan",
    "right key, another symbol",
    "right key, edited",
]


def test_a_forged_allow_for_a_plan_p33_denies_sends_no_order(
    chain_factory: Callable[..., Chain], redis_url: str, keydir: Path
) -> None:
    chain = chain_factory(COOLDOWN_S="0")
    chain.use_keys(keydir)
    k = chain.keys
    # what a thief of a *signed* permit has: the genuine P3.3 signature, for other plans only
    p33_key = Ed25519Signer.of(P33, load_private(keydir / "p33.key", "p33"))

    async def body() -> tuple[dict[str, str], list[dict[str, str]], int]:
        r = async_client(redis_url)
        try:
            await seed(r, k)  # ledger 0.002 vs exchange 0.062: P3.3 denies every close
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            await wait_snapshot(r, k)
            honest = await wait_result(r, k, await propose(r, k, Action.PARTIAL_50, 1, "test"))
            forged = []
            for tranche, kind in enumerate(FORGERIES, start=2):
                epoch = await current_epoch(r, k, SYMBOL)
                pid = make_plan_id(SYMBOL, Action.PARTIAL_50.value, epoch, tranche)
                # in place before the plan exists: P3.3's own deny (SET NX) never lands
                await r.set(k.permit_p33(pid), forge(kind, pid, p33_key), ex=60)
                assert await propose(r, k, Action.PARTIAL_50, tranche, "test") == pid
                forged.append({**await wait_result(r, k, pid), "kind": kind})
            return honest, forged, await r.xlen(k.sim_fills)
        finally:
            await r.aclose()

    honest, forged, fills = asyncio.run(body())
    assert (honest["status"], honest["reason"]) == ("blocked", "p33_denied")
    for res in forged:
        assert (res["status"], res["reason"], res["executed"]) == (
            "blocked",
            "permit_invalid",
            "false",
        ), res
    assert fills == 0


async def replay_and_alter(r: Redis, k: Keys, request: dict[str, Any]) -> dict[str, Any]:
    """Publish the same request's plan again (a replay), and an altered one."""

    async def publish(plan: Plan) -> str | None:
        fields = [x for kv in plan.to_fields().items() for x in kv]
        return await publish_plan(r, k, plan.plan_id, 300, 100_000, fields)

    replay = await publish(flatten_plan(request))  # published once: nothing new happens
    # another reason and plan id, the signature kept: denied, nothing sent
    altered = flatten_plan({**request, "reason": "something else", "plan_id": "0" * 16})
    await publish(altered)
    return {
        "replay": replay,
        "altered": await wait_result(r, k, altered.plan_id),
        "altered_audit": await audit_for(r, k, altered.plan_id),
    }


def test_flatten_fills_under_halt_while_a_proposal_is_denied(
    chain_factory: Callable[..., Chain], redis_url: str, keydir: Path
) -> None:
    chain = chain_factory(COOLDOWN_S="15")
    chain.use_keys(keydir)
    k = chain.keys
    operator_env = {
        "PERMIT_OPERATOR_KEY_FILE": str(keydir / "operator.key"),
        "REDIS_URL": redis_url,
        "COLUMNS": "200",
    }

    async def body() -> dict[str, Any]:
        r = async_client(redis_url)
        try:
            await seed(r, k, ledger=False)  # P3.3 starts its ledger from the exchange: 0.062
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            await wait_snapshot(r, k)
            halted = await asyncio.to_thread(cli, chain, "halt", "--reason", "exchange incident")
            assert halted.returncode == 0, halted.stderr
            t0 = time.time()
            proposed = await propose(r, k, Action.PARTIAL_50, 1, "exit-brain")
            args = ("flatten", SYMBOL, "--reason", "incident: close it all", "--json")
            flat = await asyncio.to_thread(cli, chain, *args, **operator_env)
            assert flat.returncode == 0, flat.stdout + flat.stderr
            (row,) = json.loads(flat.stdout)
            denied = await wait_result(r, k, proposed)
            audit = await audit_for(r, k, row["plan_id"])
            request = next(e for e in audit if e["decision"] == "FLATTEN_REQUEST")["context"]
            tampered = await replay_and_alter(r, k, request["request"])
            return {
                "t0": t0,
                "row": row,
                "denied": denied,
                "audit": audit,
                "proposal_audit": await audit_for(r, k, proposed),
                **tampered,
                "position": await r.hget(k.sim_position(SYMBOL), "amt"),
                "fills": await r.xlen(k.sim_fills),
                "request": request["request"],
            }
        finally:
            await r.aclose()

    out = asyncio.run(body())
    row, request = out["row"], out["request"]
    # both under the same HALTED state: the proposal first, then the operator's request
    assert float(request["created_at"]) >= out["t0"]
    # the exit brain's proposal: the governor denies trading_halted, no order
    assert (out["denied"]["status"], out["denied"]["reason"]) == ("blocked", "governor_denied")
    gov = [e for e in out["proposal_audit"] if e["layer"] == "governor"]
    assert [(e["decision"], e["reason"]) for e in gov] == [("DENY", "trading_halted")]
    # the flatten: the whole position, reduce-only, filled under HALTED
    assert (row["status"], row["filled_qty"]) == ("filled", "0.062")
    assert out["fills"] == 1 and Decimal(out["position"] or "0") == 0
    steps = [(e["layer"], e["decision"], e["reason"]) for e in out["audit"]]
    assert ("operator", "FLATTEN_REQUEST", "incident: close it all") in steps
    assert ("operator", "PLAN", "operator_emergency_exit") in steps
    assert ("governor", "GRANT", "operator_emergency_exit") in steps
    assert ("position-brain", "ALLOW", "ok") in steps
    assert request["kid"] and request["sig"] and request["operator"]
    assert out["replay"] is None
    assert (out["altered"]["status"], out["altered"]["reason"]) == ("blocked", "governor_denied")
    assert ("governor", "DENY", "operator_signature_invalid") in [
        (e["layer"], e["decision"], e["reason"]) for e in out["altered_audit"]
    ]
    # `explain` shows the request, the plan, both permits and the order
    explained = cli(chain, "explain", row["plan_id"], "--json")
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout
    for word in ("FLATTEN_REQUEST", "operator_emergency_exit", "filled"):
        assert word in text
    plan = json.loads(text)["plan"]
    assert (plan["source"], plan["action"]) == ("operator", "FULL_CLOSE_PROPOSED")
