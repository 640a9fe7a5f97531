"""HMAC-SHA256 permit signatures over the permit's canonical JSON (without ``sig``)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from permitchain.models import canonical_json


def sign(body: dict[str, Any], key: str) -> str:
    msg = canonical_json({k: v for k, v in body.items() if k != "sig"})
    return hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


def verify(body: dict[str, Any], key: str) -> bool:
    sig = body.get("sig")
    if not isinstance(sig, str) or not sig:
        return False
    return hmac.compare_digest(sign(body, key), sig)
