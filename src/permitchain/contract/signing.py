"""Permit and operator-request signatures: Ed25519 (public keys), or HMAC-SHA256 outside
production (``PERMIT_SIGNATURE=hmac``).

The signed form (docs/design.md §13): the message is a context line
(``permitchain-permit-v1`` for permits, ``permitchain-operator-request-v1`` for operator
requests) and a newline, followed by the canonical JSON (keys sorted, no spaces, UTF-8) of
the object without ``sig``. The object carries ``alg`` (``ed25519``) and ``kid`` (the first 16
hex digits of the SHA-256 of the raw 32-byte public key), so both are signed too; ``sig`` is
the 64-byte signature in hex. ``tests/security/test_signature_vector.py`` fixes one example.

HMAC permits (outside production only) carry neither ``alg`` nor ``kid``: ``sig`` is the hex
HMAC-SHA256 of the canonical JSON without ``sig`` under the issuer's secret.

A :class:`Verifier` holds public keys per issuer (several during a rotation; a key past its
``not_after`` is refused) and answers with what is wrong, or ``""``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from permitchain.contract.models import canonical_json

ED25519 = "ed25519"
PERMIT_CONTEXT = b"permitchain-permit-v1\n"
OPERATOR_CONTEXT = b"permitchain-operator-request-v1\n"
#: The three issuers: the two gatekeepers and the operator (emergency exits).
GOVERNOR, P33, OPERATOR = "governor", "p33", "operator"
ISSUERS = (GOVERNOR, P33, OPERATOR)


# -- HMAC (outside production only) ------------------------------------------------------------
def sign(body: dict[str, Any], key: str) -> str:
    msg = canonical_json({k: v for k, v in body.items() if k != "sig"})
    return hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


def verify(body: dict[str, Any], key: str) -> bool:
    sig = body.get("sig")
    if not isinstance(sig, str) or not sig:
        return False
    return hmac.compare_digest(sign(body, key), sig)


# -- Ed25519 -----------------------------------------------------------------------------------
def signed_bytes(body: Mapping[str, Any], context: bytes = PERMIT_CONTEXT) -> bytes:
    """The exact bytes an Ed25519 signature covers: context line + canonical JSON sans sig."""
    return context + canonical_json({k: v for k, v in body.items() if k != "sig"}).encode()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A public key's id: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


class Signer(Protocol):
    def stamp(self, body: dict[str, Any], context: bytes = PERMIT_CONTEXT) -> None:
        """Sign ``body`` in place (adds ``sig``, and ``alg``/``kid`` where the scheme has them)."""


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    issuer: str
    private_key: Ed25519PrivateKey
    kid: str = ""

    @classmethod
    def of(cls, issuer: str, private_key: Ed25519PrivateKey) -> Ed25519Signer:
        return cls(issuer, private_key, key_id(private_key.public_key()))

    def stamp(self, body: dict[str, Any], context: bytes = PERMIT_CONTEXT) -> None:
        body.pop("sig", None)
        body["alg"] = ED25519
        body["kid"] = self.kid
        body["sig"] = self.private_key.sign(signed_bytes(body, context)).hex()


@dataclass(frozen=True, slots=True)
class HmacSigner:
    secret: str

    def stamp(self, body: dict[str, Any], context: bytes = PERMIT_CONTEXT) -> None:
        body["sig"] = sign(body, self.secret)


@dataclass(frozen=True, slots=True)
class PublicKey:
    issuer: str
    key: Ed25519PublicKey
    kid: str
    not_after: float | None = None  # epoch seconds; None: no end

    @classmethod
    def of(cls, issuer: str, key: Ed25519PublicKey, not_after: float | None = None) -> PublicKey:
        return cls(issuer, key, key_id(key), not_after)


@dataclass(slots=True)
class Verifier:
    """Public keys per issuer (and, outside production, HMAC secrets).

    An issuer with public keys: the object must name one of them (``kid``, ``alg=ed25519``),
    not retired at ``now``, and its signature must verify. Else, an issuer with an HMAC
    secret: the HMAC must match. Else, an issuer in ``required`` (always the operator):
    refused. Else (outside production, no key configured): accepted unsigned."""

    keys: dict[str, dict[str, PublicKey]] = field(default_factory=dict)
    hmac_secrets: dict[str, str] = field(default_factory=dict)
    required: frozenset[str] = frozenset({OPERATOR})

    @classmethod
    def of(
        cls,
        keys: Iterable[PublicKey],
        hmac_secrets: Mapping[str, str] | None = None,
        required: Iterable[str] = (OPERATOR,),
    ) -> Verifier:
        by_issuer: dict[str, dict[str, PublicKey]] = {}
        for k in keys:
            by_issuer.setdefault(k.issuer, {})[k.kid] = k
        return cls(by_issuer, dict(hmac_secrets or {}), frozenset(required))

    def has_key(self, issuer: str) -> bool:
        return bool(self.keys.get(issuer)) or issuer in self.hmac_secrets

    def problem(
        self, issuer: str, obj: Mapping[str, Any], now: float, context: bytes = PERMIT_CONTEXT
    ) -> str:
        """What is wrong with ``obj``'s signature as ``issuer``'s, or ``""``."""
        keys = self.keys.get(issuer)
        if keys:
            if obj.get("alg") != ED25519:
                return f"{issuer} signature: alg {obj.get('alg')!r}, expected {ED25519!r}"
            kid = obj.get("kid")
            pub = keys.get(kid) if isinstance(kid, str) else None
            if pub is None:
                return f"{issuer} signature: unknown kid {kid!r}"
            if pub.not_after is not None and now > pub.not_after:
                return f"{issuer} signature: key {kid} retired"
            sig = obj.get("sig")
            try:
                if not isinstance(sig, str):
                    raise ValueError
                pub.key.verify(bytes.fromhex(sig), signed_bytes(obj, context))
            except (ValueError, InvalidSignature):
                return f"{issuer} bad signature"
            return ""
        secret = self.hmac_secrets.get(issuer)
        if secret is not None:
            return "" if verify(dict(obj), secret) else f"{issuer} bad signature"
        if issuer in self.required:
            return f"{issuer} signature: no public key configured"
        return ""
