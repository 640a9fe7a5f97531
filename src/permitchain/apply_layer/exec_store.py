"""The executor's Redis state: consume verdicts, the exec record's state moves, results.

Every move of ``quantum:exec:{plan}`` after the consume goes through ``exec_transition.lua``:
a compare-and-set on the state that publishes the move's result and audit entry in the same
atomic step, so a crash can never leave a moved state without its result, or a result twice.

States (docs/apply-layer.md): ``permitted → submitted → filled | rejected | unknown``,
``unknown → filled | rejected`` (or a final ``unknown``), ``permitted → blocked | dry_run``,
and ``blocked`` written by the consume or block script. Guard: ``result_id`` (the plan's one
result, set to its entry id: a plan has exactly one result).

On a Redis Cluster the record, the open index and the two streams live in different slots,
so one script cannot do it all. There :meth:`ExecStore.move` puts the plan in the open index
first (ZADD NX: an extra entry is harmless, the resolver checks the record), then runs
``exec_move.lua`` on the record alone: the compare-and-set, with the result and audit entry
kept in the record's ``outbox`` field (and ``result_id`` = ``pending``); then adds them to
their streams, clears the outbox and sets ``result_id`` to the entry id
(``exec_outbox_done.lua``), and takes the plan out of the open index last. A crash between
leaves the outbox; the resolver's sweep of the open index publishes it
(:meth:`ExecStore.flush_outbox`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis.exceptions
from prometheus_client import Histogram
from redis.asyncio import Redis

from permitchain.contract.keys import Keys
from permitchain.contract.models import SCHEMA, Result
from permitchain.governor.policy import TradingState
from permitchain.governor.store import queue_state_read, read_trading_state, state_from_reply
from permitchain.runtime.audit import AUDIT_MAXLEN, audit_fields
from permitchain.runtime.metrics import LabelledCounter
from permitchain.store import WRONG_KEY_TYPE, is_cluster, is_wrong_type, wrong_type
from permitchain.store.lean import NEVER_DECODE
from permitchain.store.scripts import LeanScript, Scripts, flat_pairs

log = logging.getLogger("permitchain.executor")

#: How long an exec record is kept (docs/design.md §2: 7 days); EXEC_RECORD_TTL_S overrides it.
EXEC_TTL_S = 7 * 86400
RESULT_MAXLEN = 100_000
FINAL_GUARD = "result_id"
#: Redis Cluster: the exec record field holding a move's unpublished result and audit entry.
OUTBOX = "outbox"
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


class _Queued:
    """Records the commands a ``queue_*`` helper queues, for :meth:`LeanScript.after_reads`."""

    def __init__(self) -> None:
        self.commands: list[tuple[tuple[Any, ...], bool]] = []

    def execute_command(self, *args: Any, **options: Any) -> None:
        self.commands.append((args, bool(options.get(NEVER_DECODE))))


def open_index(keys: Keys) -> str:
    """ZSET of plans with an order out (state submitted or unknown), scored by submit time."""
    return f"{keys.prefix}:apply:exec_open"


class ExecStore:
    def __init__(self, r: Redis, keys: Keys, ttl_s: int = EXEC_TTL_S) -> None:
        self.redis, self.keys, self.ttl_s = r, keys, ttl_s
        self.scripts = Scripts(r)
        self.open_key = open_index(keys)
        self.cluster = is_cluster(r)

    async def consume(self, plan_id: str, symbol: str, mode: str) -> dict[str, Any]:
        raw = await self.scripts.consume_permits(
            keys=[
                self.keys.permit_governor(plan_id),
                self.keys.permit_p33(plan_id),
                self.keys.exec_record(plan_id),
            ],
            args=[plan_id, symbol, SCHEMA, mode, self.ttl_s],
        )
        out: dict[str, Any] = json.loads(raw)
        return out

    async def block_new(self, plan_id: str, symbol: str, reason: str, detail: str) -> str:
        """Block a plan that has no exec record yet; returns the state it has after."""
        state: str = await self.scripts.block_plan(
            keys=[self.keys.exec_record(plan_id)],
            args=[reason, detail, plan_id, symbol, self.ttl_s],
        )
        return state

    async def get(self, plan_id: str) -> dict[str, str]:
        return cast("dict[str, str]", await self.redis.hgetall(self.keys.exec_record(plan_id)))

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
        """Compare-and-set the exec state; returns (moved, state now)."""
        if self.cluster:
            return await self._move_cluster(
                plan_id,
                from_states=from_states,
                to=to,
                fields=fields,
                index=index,
                guard=guard,
                result=result,
                audit=audit,
            )
        res = await self.scripts.exec_transition(
            keys=self._transition_keys(plan_id, (result or {}).get("symbol", "")),
            args=[
                ",".join(from_states),
                to,
                guard,
                index,
                plan_id,
                self.ttl_s,
                RESULT_MAXLEN,
                AUDIT_MAXLEN,
                *flat_pairs(fields or {}),
                *flat_pairs(result or {}),
                *flat_pairs(audit or {}),
            ],
        )
        return bool(int(res[0])), str(res[1])

    async def _move_cluster(
        self,
        plan_id: str,
        *,
        from_states: Iterable[str],
        to: str,
        fields: Mapping[str, str] | None,
        index: str,
        guard: str,
        result: Mapping[str, str] | None,
        audit: Mapping[str, str] | None,
    ) -> tuple[bool, str]:
        """:meth:`move` on a Redis Cluster: single-slot move with an outbox, then the writes
        to the other slots (see the module docstring)."""
        outbox = ""
        if result is not None or audit:
            outbox = json.dumps(
                {
                    "result": dict(result or {}),
                    "audit": dict(audit or {}),
                    "guard": guard,
                    "index": index,
                    "at": time.time(),
                    "token": uuid.uuid4().hex,
                },
                separators=(",", ":"),
            )
        if index == "add" or outbox:
            # before the move, so a crash after it leaves the plan where the resolver looks
            await self.redis.zadd(self.open_key, {plan_id: time.time()}, nx=True)
        res = await self.scripts.exec_move(
            keys=[self.keys.exec_record(plan_id)],
            args=[
                ",".join(from_states),
                to,
                guard,
                self.ttl_s,
                outbox,
                1 if result is not None else 0,
                *flat_pairs(fields or {}),
            ],
        )
        moved = bool(int(res[0]))
        if moved and index == "add":
            # again after the move: a resolver that checked the record in between (still not
            # open) took the entry out; an order is about to be sent, so it must be listed
            await self.redis.zadd(self.open_key, {plan_id: time.time()}, nx=True)
        if moved and outbox:
            await self._publish_outbox(plan_id, outbox)
        elif moved and index == "rem":
            await self.forget(plan_id)
        return moved, str(res[1])

    async def _publish_outbox(self, plan_id: str, raw: str) -> None:
        """Add an outbox's result and audit entry to their streams, then clear it and set the
        guard to the result's entry id, then take the plan out of the open index if the move
        said so. Run again on the same outbox (a crash before the clear), it adds them again:
        result consumers apply a plan's result once (P3.3's ledger, the governor's settle)."""
        ob = json.loads(raw)
        pipe = self.redis.pipeline(transaction=False)
        if ob["result"]:
            pipe.xadd(
                self.keys.result_stream_for(ob["result"].get("symbol", "")),
                ob["result"],
                maxlen=RESULT_MAXLEN,
                approximate=True,
            )
        if ob["audit"]:
            pipe.xadd(self.keys.decisions, ob["audit"], maxlen=AUDIT_MAXLEN, approximate=True)
        ids = await pipe.execute()
        rid = str(ids[0]) if ob["result"] else ""
        await self.scripts.exec_outbox_done(
            keys=[self.keys.exec_record(plan_id)], args=[raw, ob["guard"], rid]
        )
        if ob["index"] == "rem":
            await self.forget(plan_id)

    async def flush_outbox(self, plan_id: str, record: Mapping[str, str], min_age_s: float) -> bool:
        """Publish an outbox a crash left in ``record`` (Redis Cluster), once it is older than
        ``min_age_s`` (a younger one belongs to the live path, which publishes it itself).
        Returns True when there was one and it was published."""
        raw = record.get(OUTBOX)
        if not raw:
            return False
        try:
            at = float(json.loads(raw)["at"])
        except (ValueError, KeyError, TypeError):
            at = 0.0
        if time.time() - at < min_age_s:
            return False
        await self._publish_outbox(plan_id, raw)
        return True

    async def submit(
        self, plan_id: str, *, fields: Mapping[str, str]
    ) -> tuple[TradingState, bool, str]:
        """Read the trading state and move ``permitted → submitted`` (open index: add) in one
        round trip, the read first. Returns (trading state, moved, exec state now). On a
        Redis Cluster: the read, then the cluster move (two and more round trips)."""
        if self.cluster:
            state = await read_trading_state(self.redis, self.keys)
            moved, now = await self._move_cluster(
                plan_id,
                from_states=("permitted",),
                to="submitted",
                fields=fields,
                index="add",
                guard="",
                result=None,
                audit=None,
            )
            return state, moved, now
        keys = self._transition_keys(plan_id, fields.get("symbol", ""))
        args = [
            "permitted",
            "submitted",
            "",
            "add",
            plan_id,
            self.ttl_s,
            RESULT_MAXLEN,
            AUDIT_MAXLEN,
            *flat_pairs(fields),
            "0",
            "0",
        ]
        script = self.scripts.exec_transition
        if isinstance(script, LeanScript):  # the read and the script in one write
            read = _Queued()
            queue_state_read(read, self.keys)
            (state_reply,), res = await script.after_reads(read.commands, keys, args)
            return state_from_reply(state_reply), bool(int(res[0])), str(res[1])
        pipe = self.redis.pipeline(transaction=False)
        queue_state_read(pipe, self.keys)
        await script(keys=keys, args=args, client=pipe)
        state_reply, res = await pipe.execute(raise_on_error=False)
        if isinstance(res, BaseException):
            raise res
        return state_from_reply(state_reply), bool(int(res[0])), str(res[1])

    def _transition_keys(self, plan_id: str, symbol: str) -> list[str]:
        return [
            self.keys.exec_record(plan_id),
            self.open_key,
            self.keys.result_stream_for(symbol),
            self.keys.decisions,
        ]

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
        return cast("list[str]", ids)

    async def forget(self, plan_id: str) -> None:
        await self.redis.zrem(self.open_key, plan_id)
