"""The executor and an operator's emergency exit, in-process on a real server: it verifies
the signed request itself (whatever the permits say) and sends it under HALTED."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.contract.signing import OPERATOR, Ed25519Signer
from permitchain.keyfiles import generate, load_private
from permitchain.operator_exit import flatten_plan, make_request
from tests.apply_layer.bench import SYM, Bench


@pytest.fixture
def operator_only(tmp_path: Path) -> Path:
    """A key directory whose only public key is the operator's (permits unsigned)."""
    generate(tmp_path / "k")
    for issuer in ("governor", "p33"):
        (tmp_path / "k" / f"{issuer}.pub").unlink()
    return tmp_path / "k"


@pytest.mark.parametrize("signer", ["operator", "fresh key", "altered", "no request"])
def test_only_a_verified_request_is_sent_under_halt(
    arun: Any, keys: Keys, settings: Settings, operator_only: Path, signer: str
) -> None:
    s = settings.model_copy(update={"permit_public_keys_dir": operator_only, "permit_wait_ms": 300})
    key = load_private(operator_only / "operator.key", "operator")
    if signer == "fresh key":
        key = Ed25519PrivateKey.generate()
    req = make_request(
        symbol=SYM,
        reason="incident",
        operator="alice",
        mode="testnet",
        now=time.time(),
        ttl_s=30,
        signer=Ed25519Signer.of(OPERATOR, key),
    )
    if signer == "altered":
        req = {**req, "reason": "another reason"}
    plan = flatten_plan(req)
    if signer == "no request":  # source=operator alone exempts nothing
        plan = plan.model_copy(update={"operator_request": ""})

    async def body(r: Redis) -> Any:
        async with Bench(r, keys, s) as b:
            await r.set(keys.trading_state, "HALTED")
            await b.gov(plan, reason="operator_emergency_exit")
            await b.p33(plan, qty="1")
            await b.handle(plan)
            return await b.result(plan.plan_id), await b.fills(plan.plan_id)

    res, fills = arun(body)
    if signer == "operator":
        assert (res["status"], res["filled_qty"], res["reduce_only"]) == ("filled", "1", "true")
        assert len(fills) == 1
    else:
        assert (res["status"], res["reason"]) == ("blocked", "permit_invalid")
        assert "operator" in res["error"] and fills == []
