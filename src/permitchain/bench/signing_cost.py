"""The CPU a plan's two permit signatures cost, Ed25519 against HMAC-SHA256, measured in the
same run: each gatekeeper signs its permit once, the executor verifies both (process CPU
time over ``rounds`` plans, so a busy machine slows both schemes alike)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from permitchain.contract.models import GovernorPermit, P33Allow
from permitchain.contract.signing import (
    GOVERNOR,
    P33,
    Ed25519Signer,
    HmacSigner,
    PublicKey,
    Signer,
    Verifier,
)
from permitchain.runtime.permits import permit_json

#: The budget: Ed25519 may add at most this much CPU per plan over HMAC.
TARGET_EXTRA_MS = 0.1


def _permits(now: float) -> tuple[GovernorPermit, P33Allow]:
    pid = "0123456789abcdef"
    gov = GovernorPermit(
        plan_id=pid,
        symbol="BTCUSDT",
        decision="GRANT",
        granted=True,
        reason="testnet_auto_approve",
        computed_qty=Decimal("0.046"),
        computed_notional=Decimal("4.922"),
        mode="testnet",
        created_at=now,
        expires_at=now + 60,
    )
    p33 = P33Allow(
        plan_id=pid,
        symbol="BTCUSDT",
        safe_close_qty=Decimal("0.046"),
        side="LONG",
        exchange_position_amt=Decimal("0.062"),
        ledger_position_amt=Decimal("0.062"),
        snapshot_age_sec=Decimal("0.4"),
        created_at=now,
        expires_at=now + 60,
    )
    return gov, p33


def _cpu_us(fn: Callable[[], object], rounds: int) -> float:
    t0 = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t0) / rounds * 1e6


def _scheme(gs: Signer, ps: Signer, verifier: Verifier, rounds: int) -> dict[str, float]:
    now = time.time()
    gov, p33 = _permits(now)
    gbody, pbody = gov.body(), p33.body()
    gobj = json.loads(permit_json(gov, gs)[0])
    pobj = json.loads(permit_json(p33, ps)[0])
    assert not verifier.problem(GOVERNOR, gobj, now) and not verifier.problem(P33, pobj, now)

    def sign() -> None:
        gs.stamp(dict(gbody))
        ps.stamp(dict(pbody))

    def verify() -> None:
        verifier.problem(GOVERNOR, gobj, now)
        verifier.problem(P33, pobj, now)

    sign_us, verify_us = _cpu_us(sign, rounds), _cpu_us(verify, rounds)
    return {"sign_us": sign_us, "verify_us": verify_us, "total_us": sign_us + verify_us}


def measure(rounds: int = 2000) -> dict[str, Any]:
    """Per plan: both permits signed, both verified; Ed25519 and HMAC, and the difference."""
    gk, pk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ed = _scheme(
        Ed25519Signer.of(GOVERNOR, gk),
        Ed25519Signer.of(P33, pk),
        Verifier.of([PublicKey.of(GOVERNOR, gk.public_key()), PublicKey.of(P33, pk.public_key())]),
        rounds,
    )
    hm = _scheme(
        HmacSigner("g" * 32),
        HmacSigner("p" * 32),
        Verifier.of([], {GOVERNOR: "g" * 32, P33: "p" * 32}),
        rounds,
    )
    extra_ms = (ed["total_us"] - hm["total_us"]) / 1000
    return {
        "rounds": rounds,
        "ed25519": ed,
        "hmac": hm,
        "extra_ms_per_plan": extra_ms,
        "target_extra_ms": TARGET_EXTRA_MS,
        "within_target": extra_ms <= TARGET_EXTRA_MS,
    }


def describe(res: dict[str, Any]) -> str:
    ed, hm = res["ed25519"], res["hmac"]
    verdict = "within" if res["within_target"] else "OVER"
    chain = "signed with Ed25519" if res.get("chain_signed") else "unsigned (--signed to sign)"
    return (
        f"permit signatures, CPU per plan (2 signed, 2 verified; {res['rounds']} plans): "
        f"ed25519 sign {ed['sign_us']:.1f} µs + verify {ed['verify_us']:.1f} µs; "
        f"hmac sign {hm['sign_us']:.1f} µs + verify {hm['verify_us']:.1f} µs; "
        f"ed25519 adds {res['extra_ms_per_plan']:.3f} ms per plan ({verdict} the "
        f"{res['target_extra_ms']} ms target); the chain above ran {chain}"
    )
