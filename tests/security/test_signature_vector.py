"""The signed form of a permit, fixed by a test vector (docs/design.md §13),
and what the verifier refuses."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from permitchain.contract.models import GovernorPermit, canonical_json
from permitchain.contract.signing import (
    GOVERNOR,
    OPERATOR,
    OPERATOR_CONTEXT,
    P33,
    Ed25519Signer,
    HmacSigner,
    PublicKey,
    Verifier,
    raw_public,
    signed_bytes,
)
from permitchain.runtime.permits import permit_json

SEED = bytes(range(32))  # the private key: 00 01 02 … 1f
PUBLIC_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
KID = "56475aa75463474c"  # sha256(raw public key)[:16 hex]
SIGNED = (
    b"permitchain-permit-v1\n"
    b'{"alg":"ed25519","computed_notional":"4.922","computed_qty":"0.046","consumed":false,'
    b'"created_at":"1764720000.000000","decision":"GRANT","expires_at":"1764720060.000000",'
    b'"granted":true,"kid":"56475aa75463474c","mode":"production","plan_id":"0123456789abcdef",'
    b'"reason":"policy_ok","schema":1,"symbol":"BTCUSDT"}'
)
SIG = (
    "efe0b5ee93a4488e87459f9a2514337ad34cc17f9b176415f0b06e5bf6f6d377"
    "05a1143d9118476da91beddf6f9146814bd975ebde665c577d93c0b548a28700"
)
PERMIT = GovernorPermit(
    plan_id="0123456789abcdef",
    symbol="BTCUSDT",
    decision="GRANT",
    granted=True,
    reason="policy_ok",
    computed_qty=Decimal("0.046"),
    computed_notional=Decimal("4.922"),
    mode="production",
    created_at=1764720000.0,
    expires_at=1764720060.0,
)
NOW = 1764720010.0


def vector_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


def test_the_vector_bytes_and_signature() -> None:
    signer = Ed25519Signer.of(GOVERNOR, vector_key())
    assert raw_public(vector_key().public_key()).hex() == PUBLIC_HEX and signer.kid == KID
    value, issued = permit_json(PERMIT, signer)
    assert signed_bytes(issued) == SIGNED
    assert issued["sig"] == SIG and issued["alg"] == "ed25519" and issued["kid"] == KID
    assert value == canonical_json(issued)
    # as written and parsed back (the executor verifies the parsed JSON object)
    parsed, obj = GovernorPermit.from_json_with_obj(value)
    assert parsed.kid == KID and parsed.to_json() == value
    verifier = Verifier.of([PublicKey.of(GOVERNOR, vector_key().public_key())])
    assert verifier.problem(GOVERNOR, obj, NOW) == ""


def signed_obj() -> dict[str, object]:
    return dict(json.loads(permit_json(PERMIT, Ed25519Signer.of(GOVERNOR, vector_key()))[0]))


def verifier() -> Verifier:
    return Verifier.of([PublicKey.of(GOVERNOR, vector_key().public_key())])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"computed_qty": "0.047"}, "governor bad signature"),
        ({"plan_id": "fedcba9876543210"}, "governor bad signature"),
        ({"symbol": "ETHUSDT"}, "governor bad signature"),
        ({"expires_at": "1764729999.000000"}, "governor bad signature"),
        ({"sig": "00" * 64}, "governor bad signature"),
        ({"sig": "not hex"}, "governor bad signature"),
        ({"kid": "0000000000000000"}, "governor signature: unknown kid '0000000000000000'"),
        ({"alg": "hmac-sha256"}, "governor signature: alg 'hmac-sha256', expected 'ed25519'"),
    ],
)
def test_any_change_is_refused(change: dict[str, str], problem: str) -> None:
    assert verifier().problem(GOVERNOR, {**signed_obj(), **change}, NOW) == problem


def test_a_fresh_key_hmac_and_the_wrong_issuer_are_refused() -> None:
    fresh = Ed25519Signer.of(GOVERNOR, Ed25519PrivateKey.generate())
    assert "unknown kid" in verifier().problem(
        GOVERNOR, json.loads(permit_json(PERMIT, fresh)[0]), NOW
    )
    for secret in ("", "governor-secret", SEED.hex()):
        hmac_obj = json.loads(permit_json(PERMIT, HmacSigner(secret))[0])
        assert "alg None" in verifier().problem(GOVERNOR, hmac_obj, NOW)
    # the governor's genuine signature does not make a P3.3 permit, nor an operator request
    both = Verifier.of(
        [
            PublicKey.of(GOVERNOR, vector_key().public_key()),
            PublicKey.of(P33, Ed25519PrivateKey.generate().public_key()),
        ]
    )
    assert "unknown kid" in both.problem(P33, signed_obj(), NOW)
    as_operator = Verifier.of([PublicKey.of(OPERATOR, vector_key().public_key())])
    assert as_operator.problem(OPERATOR, signed_obj(), NOW, OPERATOR_CONTEXT) == (
        "operator bad signature"
    )  # another context line: a permit's signature is never an operator's


def test_unsigned_passes_only_without_any_key_and_never_for_the_operator() -> None:
    unsigned = json.loads(PERMIT.to_json())
    assert Verifier.of([]).problem(GOVERNOR, unsigned, NOW) == ""  # nothing configured
    assert verifier().problem(GOVERNOR, unsigned, NOW) != ""
    assert Verifier.of([]).problem(OPERATOR, unsigned, NOW) == (
        "operator signature: no public key configured"
    )
