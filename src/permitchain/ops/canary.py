"""``permitchain proof --canary`` sends two harmless probes through the running chain and
follows them:

1. a proposal ``HOLD`` for the reserved symbol ``PCCANARY``: the planner must answer SKIP
   (``not_in_allowlist`` or ``hold_action``, never EXECUTE: HOLD is always skipped);
2. a plan with ``mode=dry_run``, ``source=canary`` for ``PCCANARY``, published with the
   planner's own script: the governor and P3.3 must each issue a permit, the executor must
   write exactly one result that did not execute (``blocked`` or ``dry_run``), and P3.3's
   ledger consumer must take that result.

The governor grants it (``canary_dry_run``, unless trading is HALTED) and P3.3 allows a
nominal quantity without reading a snapshot, claiming the symbol or touching a ledger; the
last step checks the executor then ended it ``dry_run``. It cannot move money: the executor
ends every ``mode=dry_run`` plan before any order is built, and only ``mode=dry_run``
plans of ``source=canary`` for the reserved symbol get the canary treatment.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from permitchain.apply_layer.planner_service import publish_plan
from permitchain.contract.keys import GROUP_P33_LEDGER, Keys
from permitchain.contract.models import (
    CANARY_SYMBOL,
    Plan,
    PlanDecision,
    Proposal,
    Step,
    make_plan_id,
)
from permitchain.contract.settings import Settings
from permitchain.exit_brain.api import submit_proposal
from permitchain.ops import reads as rd
from permitchain.ops.check import Check
from permitchain.ops.history import audit_entry
from permitchain.store import AsyncRedis

CANARY_TIMEOUT_S = 10.0


def canary_tranche(nonce: str) -> int:
    """The run's tranche, from its nonce: the planner's identity (symbol, action, epoch,
    tranche) differs on every run, so a canary every minute is never a duplicate plan."""
    return int(nonce, 16) % 10**12


def canary_plan(s: Settings, nonce: str, now: float) -> Plan:
    return Plan(
        plan_id=make_plan_id(CANARY_SYMBOL, "PARTIAL_25", 0, 0, "CANARY", nonce),
        symbol=CANARY_SYMBOL,
        action="PARTIAL_25",
        decision=PlanDecision.EXECUTE,
        reason_codes=("canary",),
        kill_score=Decimal(0),
        close_fraction=Decimal("0.25"),
        steps=(Step(step="CLOSE_PARTIAL_25", type="market_reduce_only", fraction=Decimal("0.25")),),
        mode="dry_run",
        source="canary",
        proposal_id=f"canary-{nonce}",
        proposal_ts=now,
        created_at=now,
        expires_at=now + s.plan_max_age_s,
    )


class _Follower:
    """Follows the audit and result streams from a starting point, by blocking reads."""

    def __init__(self, r: AsyncRedis, k: Keys) -> None:
        self.redis, self.keys = r, k
        self.audit: list[dict[str, Any]] = []
        self.results: list[tuple[str, dict[str, str]]] = []
        self.pos: dict[str, str] = {}

    async def start(self) -> None:
        self.pos = await rd.last_ids(self.redis, (self.keys.decisions, *self.keys.result_streams))

    async def until(self, done: Callable[[], bool], deadline: float) -> bool:
        while not done():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return False
            resp = await rd.xread(self.redis, self.pos, count=500, block_ms=min(left_ms, 500))
            for stream, entries in resp:
                for entry_id, f in entries:
                    self.pos[stream] = entry_id
                    if stream == self.keys.decisions:
                        self.audit.append(audit_entry(entry_id, f))
                    else:
                        self.results.append((entry_id, dict(f)))
        return True

    def decision(self, layer: str, plan_id: str) -> dict[str, Any] | None:
        return next(
            (e for e in self.audit if e["layer"] == layer and e["plan_id"] == plan_id), None
        )

    def result(self, plan_id: str) -> tuple[str, dict[str, str]] | None:
        return next(((i, f) for i, f in self.results if f.get("plan_id") == plan_id), None)


async def _ledger_took(r: AsyncRedis, k: Keys, result_id: str, deadline: float) -> bool:
    """True once the p33-ledger group has read and acknowledged the result entry."""

    def sid(x: str) -> tuple[int, int]:
        a, _, b = x.partition("-")
        return int(a), int(b or 0)

    stream = k.result_stream_for(CANARY_SYMBOL)
    while time.monotonic() < deadline:
        groups = await rd.xinfo_groups(r, stream)
        g = next((g for g in groups if g.get("name") == GROUP_P33_LEDGER), None)
        if g is not None and sid(str(g["last-delivered-id"])) >= sid(result_id):
            pending = await rd.xpending(r, stream, GROUP_P33_LEDGER, result_id, result_id, 1)
            if not pending:
                return True
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
    return False


async def run_canary(r: AsyncRedis, k: Keys, s: Settings, timeout_s: float) -> list[Check]:
    if CANARY_SYMBOL in s.allow_list:
        return [
            Check(
                "canary",
                "operator",
                False,
                f"ALLOW_LIST_SYMBOLS contains the canary symbol {CANARY_SYMBOL}",
            )
        ]
    nonce, now = uuid.uuid4().hex[:12], time.time()
    deadline = time.monotonic() + timeout_s
    follow = _Follower(r, k)
    await follow.start()
    checks: list[Check] = []
    # 1. the planner: a HOLD proposal is always skipped
    proposal = Proposal(
        proposal_id=f"canary-{nonce}",
        symbol=CANARY_SYMBOL,
        action="HOLD",
        kill_score=Decimal(0),
        tranche=canary_tranche(nonce),  # a new identity per run: never a duplicate_plan
        ts_epoch=now,
        source="canary",
    )
    await submit_proposal(r, k, proposal, ttl_s=2)

    def planner_entry() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in follow.audit
                if e["layer"] == "planner"
                and isinstance(e["context"], dict)
                and e["context"].get("proposal_id") == proposal.proposal_id
            ),
            None,
        )

    await follow.until(lambda: planner_entry() is not None, deadline)
    await r.delete(k.proposal(CANARY_SYMBOL))  # our own probe: spare the planner's sweep
    pe = planner_entry()
    checks.append(
        Check(
            "canary planner",
            "apply-layer",
            pe is not None and pe["decision"] == "SKIP",
            f"proposal HOLD {CANARY_SYMBOL} → {pe['decision']} {pe['reason']}"
            if pe
            else f"no planner decision within {timeout_s:g}s"
            " (apply-layer planner not consuming proposals)",
        )
    )
    # 2. the plan: both gatekeepers, the executor, the ledger consumer
    plan = canary_plan(s, nonce, time.time())
    flat: list[str] = []
    for key, v in plan.to_fields().items():
        flat += [key, v]
    await publish_plan(r, k, plan.plan_id, s.dedupe_ttl_s, s.plan_stream_maxlen, flat)
    pid = plan.plan_id

    def all_seen() -> bool:
        return all(follow.decision(layer, pid) for layer in ("governor", "position-brain")) and (
            follow.result(pid) is not None
        )

    deadline = time.monotonic() + timeout_s  # a slow planner must not eat the plan's time
    await follow.until(all_seen, deadline)
    for layer, what in (("governor", "governor permit"), ("position-brain", "P3.3 permit")):
        e = follow.decision(layer, pid)
        checks.append(
            Check(
                f"canary {layer}",
                layer,
                e is not None,
                f"{what}: {e['decision']} {e['reason']}"
                if e
                else f"no {what} for canary plan {pid} within {timeout_s:g}s",
            )
        )
    res = follow.result(pid)
    if res is None:
        checks.append(
            Check(
                "canary executor",
                "apply-layer",
                False,
                f"no result for canary plan {pid} within {timeout_s:g}s",
            )
        )
    else:
        f = res[1]
        safe = (
            f.get("executed") == "false"
            and f.get("status") in ("blocked", "dry_run")
            and (not f.get("order_id"))
        )
        checks.append(
            Check(
                "canary executor",
                "apply-layer",
                safe,
                f"result {f.get('status')} {f.get('reason')}, executed "
                f"{f.get('executed')}, no order"
                if safe
                else f"UNSAFE: canary result {f}",
            )
        )
        took = await _ledger_took(r, k, res[0], deadline)
        checks.append(
            Check(
                "canary ledger",
                "position-brain",
                took,
                "p33-ledger consumed the canary result"
                if took
                else f"p33-ledger did not take result {res[0]} within {timeout_s:g}s",
            )
        )
    dry = res is not None and res[1].get("status") == "dry_run"
    checks.append(
        Check(
            "canary dry_run end to end",
            "apply-layer",
            dry,
            "both permits allowed, executor ended dry_run"
            if dry
            else f"expected a dry_run result after two allows, got "
            f"{res[1].get('status')} {res[1].get('reason')}"
            if res
            else "no result",
        )
    )
    return checks
