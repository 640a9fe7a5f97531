"""Wait for what became of one proposal: ``permitchain propose --wait SECONDS``.

Blocking reads (XREAD) of the audit and result streams from where they stood before the
proposal was sent: the planner's audit entry names the plan (and a SKIP ends the wait with
its reason, as does a DUPLICATE: the same identity was planned before, so this proposal
makes nothing new); the executor's result for that plan ends it with the result's status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.ops import reads as rd
from permitchain.ops.history import audit_entry
from permitchain.store import AsyncRedis

#: Result statuses that mean the chain did what was asked (exit 0).
DONE = ("filled", "partially_filled", "dry_run")


@dataclass
class PlanOutcome:
    plan_id: str = ""
    decision: str = ""  # the planner's: EXECUTE, SKIP or DUPLICATE ('' when none was seen)
    status: str = ""  # the result's (or the exec record's) status; '' when none came
    reason: str = ""
    result: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in DONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "decision": self.decision,
            "status": self.status,
            "reason": self.reason,
            "ok": self.ok,
            "result": self.result,
        }


async def positions(r: AsyncRedis, k: Keys) -> dict[str, str]:
    """Where the audit and result streams (every shard) stand now (read before sending the
    proposal)."""
    return await rd.last_ids(r, (k.decisions, *k.result_streams))


async def await_outcome(
    r: AsyncRedis, k: Keys, proposal_id: str, pos: dict[str, str], timeout_s: float
) -> PlanOutcome:
    """The proposal's outcome, or as far as it got by ``timeout_s`` (``status`` '')."""
    out = PlanOutcome()
    results: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        if out.plan_id and out.plan_id in results:
            f = results[out.plan_id]
            out.status, out.reason, out.result = f.get("status", ""), f.get("reason", ""), f
            return out
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return out
        for stream, entries in await rd.xread(r, pos, count=500, block_ms=left_ms):
            for entry_id, f in entries:
                pos[stream] = entry_id
                if stream in k.result_streams:
                    results[f.get("plan_id", "")] = dict(f)
                    continue
                e = audit_entry(entry_id, f)
                ctx = e["context"] if isinstance(e["context"], dict) else {}
                if e["layer"] != "planner" or ctx.get("proposal_id") != proposal_id:
                    continue
                out.plan_id, out.decision, out.reason = e["plan_id"], e["decision"], e["reason"]
                if out.decision in ("SKIP", "DUPLICATE"):
                    out.status = "skipped"  # this proposal made no new plan: nothing to wait for
                    return out
