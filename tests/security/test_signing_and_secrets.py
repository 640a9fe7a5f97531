"""Signed permits through the whole chain, and secrets that never reach a log or Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.models import GovernorPermit, P33Allow, make_plan_id
from permitchain.exchange.sim import SimExchange
from permitchain.scenario import (
    ENTRY,
    EXCHANGE_AMT,
    SYMBOL,
    propose_reference,
    run_reference,
    wait_result,
)
from permitchain.store import async_client

pytestmark = pytest.mark.slow
GOV_KEY = "gov-secret-5f1e2d9c0b7a4e3f"
P33_KEY = "p33-secret-8a7b6c5d4e3f2a1b"
BINANCE_SECRET = "binance-secret-0f9e8d7c6b5a"


def test_signed_chain_and_no_secret_anywhere(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis
) -> None:
    chain = chain_factory(
        PERMIT_SIGNATURE="hmac",
        PERMIT_KEY_GOVERNOR=GOV_KEY,
        PERMIT_KEY_P33=P33_KEY,
        BINANCE_API_SECRET=BINANCE_SECRET,
        LOG_LEVEL="DEBUG",
    )
    k = chain.keys

    ok = run_reference(chain, redis_url, emit=lambda n, d: None).ok()

    async def body() -> dict[str, str]:
        """A permit typed in by hand (no valid signature) executes nothing."""
        ar = async_client(redis_url)
        try:
            await SimExchange(ar, k).set_position(SYMBOL, EXCHANGE_AMT, ENTRY)
            await ar.hset(
                k.ledger(SYMBOL), mapping={"last_known_amt": str(EXCHANGE_AMT), "epoch": "7"}
            )
            # the plan id is known in advance (deterministic), so the forged permits are in
            # place before the plan exists and the gatekeepers' SET NX leaves them there
            plan_id = make_plan_id(SYMBOL, "PARTIAL_75", 7, 3)
            now = time.time()
            forged_gov = GovernorPermit(
                plan_id=plan_id,
                symbol=SYMBOL,
                decision="GRANT",
                granted=True,
                reason="policy_ok",
                mode="testnet",
                created_at=now,
                expires_at=now + 60,
                sig="0" * 64,
            )
            forged_p33 = P33Allow(
                plan_id=plan_id,
                symbol=SYMBOL,
                safe_close_qty=EXCHANGE_AMT,
                side="LONG",
                exchange_position_amt=EXCHANGE_AMT,
                ledger_position_amt=EXCHANGE_AMT,
                snapshot_age_sec=0,
                created_at=now,
                expires_at=now + 60,
                sig="0" * 64,
            )
            await ar.set(k.permit_governor(plan_id), forged_gov.to_json(), ex=60)
            await ar.set(k.permit_p33(plan_id), forged_p33.to_json(), ex=60)
            _proposal, proposed = await propose_reference(ar, k, 60)
            assert proposed == plan_id
            return await wait_result(ar, k, plan_id)
        finally:
            await ar.aclose()

    forged = asyncio.run(body())
    assert ok  # the reference scenario passes with signed permits
    assert forged["status"] == "blocked" and forged["reason"] == "permit_invalid"
    assert r.xlen(k.sim_fills) == 1  # only the scenario's own close
    # permits in the audit stream are signed, and no secret is anywhere
    signed = [
        json.loads(f["context"])["permit"]
        for _i, f in r.xrange(k.decisions)
        if f.get("layer") in ("governor", "position-brain") and "permit" in f["context"]
    ]
    assert signed and all(len(p.get("sig", "")) == 64 for p in signed)
    logs = "".join(p.read_text() for p in (chain.log_dir or []).glob("*.log"))  # type: ignore[union-attr]
    dump = logs + json.dumps([f for _i, f in r.xrange(k.decisions)])
    for secret in (GOV_KEY, P33_KEY, BINANCE_SECRET):
        assert secret not in dump
