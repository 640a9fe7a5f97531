"""The audit stream ``quantum:stream:decisions``: one entry per decision of every layer.

``permitchain explain PLAN`` rebuilds a plan's history from it, long after permits expired.
Callers add the entry to the same pipeline as the decision's own writes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.store.protocol import AsyncPipeline, AsyncRedis

AUDIT_MAXLEN = 500_000
#: ``json.dumps(context, default=str, separators=(",", ":"))``, its encoder made once
_context_json = json.JSONEncoder(default=str, separators=(",", ":")).encode


def audit_fields(
    *,
    plan_id: str,
    layer: str,
    decision: str,
    reason: str,
    context: dict[str, Any] | None = None,
    symbol: str = "",
    ts: float | None = None,
) -> dict[str, str]:
    return {
        "plan_id": plan_id,
        "symbol": symbol,
        "layer": layer,
        "decision": decision,
        "reason": reason,
        "context": _context_json(context or {}),
        "ts": f"{(time.time() if ts is None else ts):.6f}",
    }


def add_audit(pipe: AsyncPipeline | AsyncRedis, keys: Keys, **kw: Any) -> Any:
    """Queue one audit entry on a pipeline (or call it on a client and await the result)."""
    return pipe.xadd(keys.decisions, audit_fields(**kw), maxlen=AUDIT_MAXLEN, approximate=True)
