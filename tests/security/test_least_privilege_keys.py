"""Least privilege, end to end: with everything the apply-layer process holds (its
environment, its credential files, its Redis ACL user) no permit it can write or alter
executes, and no emergency exit it can make up executes either."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, Proposal, make_plan_id
from permitchain.contract.settings import load_settings
from permitchain.contract.signing import ISSUERS, OPERATOR, Ed25519Signer, HmacSigner, Signer
from permitchain.exit_brain.api import current_epoch, new_proposal_id, submit_proposal
from permitchain.keyfiles import generate, private_key_location, signer_for, verifier_for
from permitchain.operator_exit import flatten_plan, make_request
from permitchain.scenario import SYMBOL, audit_for, seed, wait_result, wait_snapshot
from permitchain.store import async_client
from tests.security.test_acl import users  # noqa: F401 - the ACL users fixture

pytestmark = pytest.mark.slow


def refused(fn: Callable[[], object]) -> bool:
    """The server refused the command (NOPERM), or the script's command on that key."""
    try:
        fn()
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as e:
        return "can't access" in str(e) or "NOPERM" in str(e)
    return False


def apply_layer_settings(chain: Chain) -> Any:
    env = chain.child_env("apply-layer")
    return load_settings({k: v for k, v in env.items() if k != "PERMITCHAIN_ENV_FILE"})


def test_the_apply_layer_can_make_no_permit_or_exit_execute(
    users: dict[str, str],  # noqa: F811 - the fixture imported above
    redis_url: str,
    chain_factory: Callable[..., Chain],
    tmp_path: Path,
) -> None:
    generate(tmp_path / "keys")
    chain = chain_factory(COOLDOWN_S="0")
    chain.service_env = {svc: {"REDIS_URL": url} for svc, url in users.items()}
    chain.use_keys(tmp_path / "keys")
    k = chain.keys
    # 1. its environment and credentials: public keys only, so it can sign nothing
    s = apply_layer_settings(chain)
    assert all(private_key_location(s, issuer) is None for issuer in ISSUERS)
    assert signer_for(s, "governor") is None and signer_for(s, "p33") is None
    assert all(verifier_for(s).keys.get(issuer) for issuer in ISSUERS)
    me = redis.Redis.from_url(users["apply-layer"], decode_responses=True)
    assert_no_string_permit(me, k)

    async def body() -> dict[str, Any]:
        r = async_client(redis_url)
        try:
            await seed(r, k, ledger=False)  # P3.3 allows closes of this position
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
            await wait_snapshot(r, k)
            honest = await wait_result(r, k, await propose(r, k, 1))
            # 3. what it can do to a permit key (HSET) is a permit of the wrong type
            altered = []
            for tranche, which in ((2, "p33"), (3, "governor")):
                epoch = await current_epoch(r, k, SYMBOL)
                plan_id = make_plan_id(SYMBOL, Action.PARTIAL_25.value, epoch, tranche)
                key = k.permit_p33(plan_id) if which == "p33" else k.permit_governor(plan_id)
                me.hset(key, mapping={"allow": "true", "safe_close_qty": "0.062"})
                assert await propose(r, k, tranche) == plan_id
                altered.append(await wait_result(r, k, plan_id))
            # 4. an emergency exit it makes up: signed by a fresh key, or by HMAC
            exits = []
            signers: list[Signer] = [
                Ed25519Signer.of(OPERATOR, Ed25519PrivateKey.generate()),
                HmacSigner("operator-secret"),
            ]
            for signer in signers:
                req = make_request(
                    symbol=SYMBOL,
                    reason="x",
                    operator="apply-layer",
                    mode="testnet",
                    now=time.time(),
                    ttl_s=30,
                    signer=signer,
                )
                plan = flatten_plan(req)
                me.xadd(k.plan_stream, plan.to_fields())  # type: ignore[arg-type]
                exits.append(
                    (await wait_result(r, k, plan.plan_id), await audit_for(r, k, plan.plan_id))
                )
            return {
                "honest": honest,
                "altered": altered,
                "exits": exits,
                "fills": await r.xlen(k.sim_fills),
            }
        finally:
            await r.aclose()

    try:
        out = asyncio.run(body())
    finally:
        me.close()
    assert (out["honest"]["status"], out["honest"]["reason"]) == ("filled", "ok")
    for res in out["altered"]:
        assert (res["status"], res["reason"]) == ("blocked", "permit_invalid")
        assert "wrong key type hash" in res["error"]
    for res, audit in out["exits"]:
        assert (res["status"], res["reason"]) == ("blocked", "governor_denied")
        decisions = {(e["layer"], e["decision"], e["reason"]) for e in audit}
        assert ("governor", "DENY", "operator_signature_invalid") in decisions
        assert ("position-brain", "DENY", "operator_signature_invalid") in decisions
    assert out["fills"] == 1  # the honest plan's close only


def assert_no_string_permit(me: redis.Redis, k: Keys) -> None:
    """Its Redis user: no permit can be written as a string, by a command or by a script."""
    pid = make_plan_id(SYMBOL, Action.PARTIAL_50.value, 0, 9)
    script = "return redis.call('SET', KEYS[1], '{}')"
    for key in (k.permit_governor(pid), k.permit_p33(pid)):
        assert refused(lambda key=key: me.set(key, "{}"))
        assert refused(lambda key=key: me.eval(script, 1, key))
        assert refused(lambda key=key: me.append(key, "{}"))


async def propose(r: Any, keys: Keys, tranche: int) -> str:
    action = Action.PARTIAL_50 if tranche == 1 else Action.PARTIAL_25
    epoch = await current_epoch(r, keys, SYMBOL)
    p = Proposal(
        proposal_id=new_proposal_id(),
        symbol=SYMBOL,
        action=action.value,
        kill_score=Decimal("0.7"),
        position_epoch=epoch,
        tranche=tranche,
        ts_epoch=time.time(),
        source="test",
    )
    await submit_proposal(r, keys, p, ttl_s=60)
    return make_plan_id(SYMBOL, action.value, epoch, tranche)
