"""The executor's Redis state: consume verdicts, the exec record's state moves, results.

Every move of ``quantum:exec:{plan}`` after the consume goes through ``exec_transition.lua``:
a compare-and-set on the state that publishes the move's result and audit entry in the same
atomic step, so a crash can never leave a moved state without its result, or a result twice.

States (docs/apply-layer.md): ``permitted → submitted → filled | rejected | unknown``,
``unknown → filled | rejected`` (or a final ``unknown``), ``permitted → blocked | dry_run``,
and ``blocked`` written by the consume or block script. Guard: ``result_id`` (the plan's one
result, set to its entry id: a plan has exactly one result).

Each move is one atomic step of the store (``store/steps.py``: one script on a single server;
on a Redis Cluster the record's compare-and-set with an outbox, then the streams, with the
resolver publishing an outbox a crash left: :meth:`ExecStore.flush_outbox`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis.exceptions
from prometheus_client import Histogram

from permitchain.contract.keys import Keys
from permitchain.contract.models import SCHEMA, Result
from permitchain.contract.reasons import WRONG_KEY_TYPE
from permitchain.contract.trading_state import (
    TradingState,
    state_from_reply,
)
from permitchain.runtime.audit import audit_fields
from permitchain.runtime.metrics import LabelledCounter
from permitchain.store import AsyncRedis, is_wrong_type, wrong_type
from permitchain.store.steps import ExecKeys, steps_for

log = logging.getLogger("permitchain.executor")

#: How long an exec record is kept (docs/design.md §2: 7 days); EXEC_RECORD_TTL_S overrides it.
EXEC_TTL_S = 7 * 86400
FINAL_GUARD = "result_id"
LAYER = "executor"

EXEC_STATUS = LabelledCounter(
    "apply_executions_total",
    "Results written by the executor (one per plan)",
    ["symbol", "status", "reason"],
)
CHAIN_LATENCY = Histogram(
    "apply_chain_latency_seconds",
    "Proposal created → result on the stream",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def open_index(keys: Keys) -> str:
    """ZSET of plans with an order out (state submitted or unknown), scored by submit time."""
    return f"{keys.prefix}:apply:exec_open"


class ExecStore:
    def __init__(self, r: AsyncRedis, keys: Keys, ttl_s: int = EXEC_TTL_S) -> None:
        self.redis, self.keys, self.ttl_s = r, keys, ttl_s
        self.steps = steps_for(r)
        self.open_key = open_index(keys)

    async def consume(self, plan_id: str, symbol: str, mode: str) -> dict[str, Any]:
        raw = await self.steps.consume_permits(
            self.keys.permit_governor(plan_id),
            self.keys.permit_p33(plan_id),
            self.keys.exec_record(plan_id),
            plan_id=plan_id,
            symbol=symbol,
            schema=SCHEMA,
            mode=mode,
            ttl_s=self.ttl_s,
        )
        out: dict[str, Any] = json.loads(raw)
        return out

    async def block_new(self, plan_id: str, symbol: str, reason: str, detail: str) -> str:
        """Block a plan that has no exec record yet; returns the state it has after."""
        return await self.steps.block_plan(
            self.keys.exec_record(plan_id),
            plan_id=plan_id,
            symbol=symbol,
            reason=reason,
            detail=detail,
            ttl_s=self.ttl_s,
        )

    async def get(self, plan_id: str) -> dict[str, str]:
        return await self.redis.hgetall(self.keys.exec_record(plan_id))

    async def ttls(self, plan_id: str) -> tuple[int, int]:
        """The permit keys' TTLs in seconds (-2 when absent)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.ttl(self.keys.permit_governor(plan_id))
        pipe.ttl(self.keys.permit_p33(plan_id))
        gov, p33 = await pipe.execute()
        return int(gov), int(p33)

    async def move(
        self,
        plan_id: str,
        *,
        from_states: Iterable[str],
        to: str,
        fields: Mapping[str, str] | None = None,
        index: str = "keep",
        guard: str = "",
        result: Mapping[str, str] | None = None,
        audit: Mapping[str, str] | None = None,
    ) -> tuple[bool, str]:
        """Compare-and-set the exec state; returns (moved, state now). The move's result and
        audit entry are published in the same step (:meth:`AtomicSteps.exec_move`)."""
        return await self.steps.exec_move(
            self.exec_keys(plan_id, (result or {}).get("symbol", "")),
            plan_id,
            from_states=from_states,
            to=to,
            fields=fields,
            index=index,
            guard=guard,
            result=result,
            audit=audit,
            ttl_s=self.ttl_s,
        )

    async def flush_outbox(self, plan_id: str, record: Mapping[str, str], min_age_s: float) -> bool:
        """Publish an outbox a crash left in ``record`` (Redis Cluster), once it is older than
        ``min_age_s`` (a younger one belongs to the live path, which publishes it itself).
        Returns True when there was one and it was published."""
        return await self.steps.flush_exec_outbox(
            self.exec_keys(plan_id, record.get("symbol", "")), plan_id, record, min_age_s
        )

    async def submit(
        self, plan_id: str, *, fields: Mapping[str, str]
    ) -> tuple[TradingState, bool, str]:
        """Read the trading state and move ``permitted → submitted`` (open index: add), the
        read first: one round trip where the server allows (:meth:`AtomicSteps.exec_submit`).
        Returns (trading state, moved, exec state now)."""
        state_reply, moved, now = await self.steps.exec_submit(
            self.exec_keys(plan_id, fields.get("symbol", "")),
            self.keys.trading_state,
            plan_id,
            fields=fields,
            ttl_s=self.ttl_s,
        )
        return state_from_reply(state_reply), moved, now

    def exec_keys(self, plan_id: str, symbol: str) -> ExecKeys:
        """The keys of a plan's exec steps; its results go to ``symbol``'s result shard."""
        return ExecKeys(
            record=self.keys.exec_record(plan_id),
            open_index=self.open_key,
            results=self.keys.result_stream_for(symbol),
            audit=self.keys.decisions,
        )

    async def publish(
        self,
        result: Result,
        *,
        from_states: Iterable[str],
        to: str,
        fields: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move to ``to`` and publish the plan's one ``result`` with its audit entry."""
        result_fields = result.to_fields()
        audit = audit_fields(
            plan_id=result.plan_id,
            symbol=result.symbol,
            layer=LAYER,
            decision="EXECUTED" if result.executed else result.status.value.upper(),
            reason=result.reason,
            context={"result": result_fields, **(context or {})},
            ts=result.ts,
        )
        state_fields = {
            "reason": result.reason,
            "filled_qty": result_fields["filled_qty"],
            "order_id": result.order_id,
            **(fields or {}),
        }
        moved, _ = await self.move(
            result.plan_id,
            from_states=from_states,
            to=to,
            fields=state_fields,
            index="rem",
            guard=FINAL_GUARD,
            result=result_fields,
            audit=audit,
        )
        if moved:
            EXEC_STATUS.inc(result.symbol, result.status.value, result.reason)
            if result.chain_latency_ms > 0:
                CHAIN_LATENCY.observe(float(result.chain_latency_ms) / 1000)
        return moved

    async def open_plans(self, submitted_before: float, limit: int = 500) -> list[str]:
        """Plans in the open index submitted before then; none (with a line naming the key)
        when the index holds another Redis type: no order goes out while it does."""
        top = "+inf" if submitted_before == float("inf") else submitted_before
        try:
            ids = await self.redis.zrangebyscore(self.open_key, "-inf", top, start=0, num=limit)
        except redis.exceptions.ResponseError as e:
            if not is_wrong_type(e):
                raise
            log.error(
                "resolver: %s: %s",
                WRONG_KEY_TYPE,
                await wrong_type(self.redis, self.open_key, "zset"),
            )
            return []
        return ids

    async def forget(self, plan_id: str) -> None:
        await self.redis.zrem(self.open_key, plan_id)
