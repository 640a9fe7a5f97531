"""Every multi-key atomic step of the chain, in one place: the Redis mechanics of each step,
for the two shapes of server.

A service decides what to write; the step here writes it, atomically. :class:`AtomicSteps`
names each step once. Two implementations:

* :class:`ServerSteps` (a plain server or a Sentinel master): one Lua script per step (one
  MULTI/EXEC for the trading state), so a step is written whole or not at all.
* :class:`ClusterSteps` (a Redis Cluster): a step's keys are in different slots, which one
  script cannot span. Each step is split: its single-slot part first (a compare-and-set that
  keeps what must follow in an outbox, where there is one), then the writes to the other
  slots, in an order that leaves anything a crash cuts short to a recovery path
  (docs/scaling.md, "Redis Cluster").

:func:`steps_for` picks the implementation once per client, by the client's class; the
services call ``steps_for(client).<step>(...)`` and never ask which one they have. Every key
is a parameter: the services name them (from ``Keys``), the steps only write them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import redis.exceptions

from permitchain.runtime.audit import AUDIT_MAXLEN
from permitchain.runtime.entries import RawEntry, xread_raw
from permitchain.store.client import first_fault, is_cluster, is_wrong_type, wrong_type
from permitchain.store.protocol import AsyncRedis
from permitchain.store.raw import queue_raw
from permitchain.store.scripts import LeanScript, Scripts, flat_pairs, scripts_for

T = TypeVar("T")

#: Approximate MAXLEN of the result stream.
RESULT_MAXLEN = 100_000
#: Approximate MAXLEN of the permit-event stream.
PERMIT_EVENTS_MAXLEN = 100_000

#: Redis Cluster: a plan's dedupe key while its publisher is between the mark and the XADD.
PENDING = "pending:"
#: Redis Cluster: a dedupe key still pending this long after it was set means its publisher
#: died before the XADD (a live one takes a round trip); shorter than the redelivery idle time.
PENDING_STALE_S = 3.0
#: Redis Cluster: the exec record field holding a move's unpublished result and audit entry.
OUTBOX = "outbox"
#: Redis Cluster: ledger hash fields ``audit_outbox:<epoch>:<nonce>`` hold audit entries
#: written with the ledger but not yet on the audit stream (another slot).
AUDIT_OUTBOX = "audit_outbox:"
#: An outbox older than this was left by a crash (the live path flushes its own at once).
OUTBOX_STALE_S = 5.0
#: ``ledger_apply.lua``'s stand-in for a field that was absent when read.
ABSENT = "\x00absent"

#: A ledger write: the fields to HSET and its audit entry (``audit_fields``).
LedgerWrite: TypeAlias = tuple[dict[str, str], dict[str, str]]
#: A ledger decision: (the fields read, the in-flight claim read) → (answer, write or None).
LedgerDecide: TypeAlias = Callable[[dict[str, str], str | None], tuple[T, LedgerWrite | None]]


@dataclass(frozen=True, slots=True)
class PlanAudit:
    """A plan's audit entry, written by :meth:`AtomicSteps.publish_plan` with the plan.

    ``fields``: the entry as ``audit_fields`` makes it, with the new plan's decision and
    reason and a context that does not hold ``entry_id``: the step adds ``"entry_id"`` (the
    new entry id, or '' for a duplicate) as the context's last member. ``duplicate``: the
    decision and reason of a duplicate's entry (None: a duplicate is not audited)."""

    stream: str
    fields: Mapping[str, str]
    duplicate: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class ExecKeys:
    """The keys of one plan's exec-record move: the record, the open index, the result
    stream and the audit stream."""

    record: str
    open_index: str
    results: str
    audit: str


def _open_context(context: str) -> str:
    """An audit context JSON object without its closing brace, ready for one more member."""
    return "{" if context == "{}" else context[:-1] + ","


def _with_entry_id(audit: PlanAudit, entry_id: str | None) -> dict[str, str]:
    """``publish_plan.lua``'s audit entry, made here: the context completed with the entry
    id; a duplicate's decision and reason in place of the plan's."""
    entry = dict(audit.fields)
    entry["context"] = _open_context(entry["context"]) + f'"entry_id":"{entry_id or ""}"}}'
    if not entry_id and audit.duplicate is not None:
        entry["decision"], entry["reason"] = audit.duplicate
    return entry


def stale_outboxes(h: Mapping[str, str], now: float | None = None) -> dict[str, str]:
    """The audit outboxes of ledger hash ``h`` older than ``OUTBOX_STALE_S``."""
    now = time.time() if now is None else now
    out = {}
    for f, v in h.items():
        if f.startswith(AUDIT_OUTBOX):
            try:
                ts: float | None = float(f.removeprefix(AUDIT_OUTBOX).split(":", 1)[0])
            except ValueError:
                ts = None
            if ts is None or now - ts >= OUTBOX_STALE_S:
                out[f] = v
    return out


class AtomicSteps(ABC):
    """The multi-key atomic steps of the chain on one client. The steps that touch one slot
    only are the same on every server and written here; the others differ by topology."""

    def __init__(self, client: AsyncRedis) -> None:
        self.redis = client
        self.scripts: Scripts = scripts_for(client)

    # -- the planner ---------------------------------------------------------------------

    @abstractmethod
    async def publish_plan(
        self,
        dedupe_key: str,
        stream: str,
        fields: Sequence[str],
        *,
        ttl_s: int,
        maxlen: int,
        audit: PlanAudit | None = None,
    ) -> str | None:
        """Publish a plan once: its dedupe key (``ttl_s``), the XADD of ``fields`` (name,
        value, …) to ``stream`` and, with ``audit``, its audit entry. Returns the entry id,
        or None when the plan was published already. A dedupe key of another Redis type
        raises (nothing is written)."""

    # -- the gatekeepers' permits --------------------------------------------------------

    @abstractmethod
    async def write_permit(
        self,
        key: str,
        value: str,
        *,
        ttl_s: int,
        event_stream: str,
        event: Mapping[str, str],
        audit_stream: str,
        audit: Mapping[str, str],
    ) -> bool:
        """The permit (SET NX EX: a plan's decision is written once), its wake-up ``event``
        and its ``audit`` entry, the event never before the permit. Returns False when a
        permit for the plan existed already (the first decision stands)."""

    @abstractmethod
    async def claim_and_write_permit(
        self,
        claim_key: str,
        claim_ms: int,
        key: str,
        value: str,
        *,
        plan_id: str,
        layer: str,
        ttl_s: int,
        event_stream: str,
        audit_stream: str,
        audit: Mapping[str, str],
    ) -> tuple[str, str]:
        """P3.3's allow with the symbol's in-flight claim ``claim_key`` (SET NX PX
        ``claim_ms``, taken for ``plan_id``): returns ``(verdict, holder)`` (see
        ``p33_claim_permit.lua``): ``("allow", "")`` or ``("allow", plan_id)`` (the claim
        already this plan's): the permit, its event and its audit entry written;
        ``("held", other)``: another plan holds the claim, nothing written;
        ``("exists", "")``: the plan has a permit already, nothing written."""

    # -- the executor --------------------------------------------------------------------

    async def consume_permits(
        self,
        governor_key: str,
        p33_key: str,
        record_key: str,
        *,
        plan_id: str,
        symbol: str,
        schema: int,
        mode: str,
        ttl_s: int,
    ) -> str:
        """Consume both permits by value and create the exec record (``consume_permits.lua``:
        the three keys share the plan's slot). Returns the script's JSON verdict."""
        raw: str = await self.scripts.consume_permits(
            keys=[governor_key, p33_key, record_key],
            args=[plan_id, symbol, schema, mode, ttl_s],
        )
        return raw

    async def block_plan(
        self, record_key: str, *, plan_id: str, symbol: str, reason: str, detail: str, ttl_s: int
    ) -> str:
        """Block a plan that has no exec record yet (``block_plan.lua``, one key); returns the
        state the record has after."""
        state: str = await self.scripts.block_plan(
            keys=[record_key], args=[reason, detail, plan_id, symbol, ttl_s]
        )
        return state

    @abstractmethod
    async def exec_move(
        self,
        keys: ExecKeys,
        plan_id: str,
        *,
        from_states: Iterable[str],
        to: str,
        fields: Mapping[str, str] | None,
        index: str,
        guard: str,
        result: Mapping[str, str] | None,
        audit: Mapping[str, str] | None,
        ttl_s: int,
    ) -> tuple[bool, str]:
        """Compare-and-set the exec state from one of ``from_states`` to ``to`` (writing
        ``fields``; ``guard``: a field that must be absent, set to the result's entry id),
        with the move's ``result`` and ``audit`` entry published in the same step and the
        open index changed (``index``: ``add``, ``rem`` or ``keep``). Returns (moved, state
        now)."""

    @abstractmethod
    async def exec_submit(
        self, keys: ExecKeys, state_key: str, plan_id: str, *, fields: Mapping[str, str], ttl_s: int
    ) -> tuple[Any, bool, str]:
        """Read the trading state ``state_key`` (raw bytes; an error reply in its place) and
        move ``permitted → submitted`` (open index: add), the read first, in as few round
        trips as the server allows. Returns (the read's reply, moved, exec state now)."""

    async def flush_exec_outbox(
        self, keys: ExecKeys, plan_id: str, record: Mapping[str, str], min_age_s: float
    ) -> bool:
        """Publish an outbox a crash left in the exec ``record`` (only a Cluster's move
        writes one: on a single server there is none, and the answer is False), once it is
        older than ``min_age_s`` (a younger one belongs to the live path, which publishes it
        itself). Returns True when there was one and it was published."""
        raw = record.get(OUTBOX)
        if not raw:
            return False
        try:
            at = float(json.loads(raw)["at"])
        except (ValueError, KeyError, TypeError):
            at = 0.0
        if time.time() - at < min_age_s:
            return False
        await self._publish_outbox(keys, plan_id, raw)
        return True

    async def _publish_outbox(self, keys: ExecKeys, plan_id: str, raw: str) -> None:
        """Add an outbox's result and audit entry to their streams, then clear it and set the
        guard to the result's entry id, then take the plan out of the open index if the move
        said so. Run again on the same outbox (a crash before the clear), it adds them again:
        result consumers apply a plan's result once (P3.3's ledger, the governor's settle)."""
        ob = json.loads(raw)
        pipe = self.redis.pipeline(transaction=False)
        if ob["result"]:
            pipe.xadd(keys.results, ob["result"], maxlen=RESULT_MAXLEN, approximate=True)
        if ob["audit"]:
            pipe.xadd(keys.audit, ob["audit"], maxlen=AUDIT_MAXLEN, approximate=True)
        ids = await pipe.execute()
        rid = str(ids[0]) if ob["result"] else ""
        await self.scripts.exec_outbox_done(keys=[keys.record], args=[raw, ob["guard"], rid])
        if ob["index"] == "rem":
            await self.redis.zrem(keys.open_index, plan_id)

    # -- P3.3's ledger and snapshots -----------------------------------------------------

    @abstractmethod
    async def write_ledger(
        self,
        ledger_key: str,
        audit_stream: str,
        decide: LedgerDecide[T],
        *,
        read: Sequence[str],
        claim_key: str,
        read_claim: bool = False,
        release_claim_of: str | None = None,
    ) -> tuple[T, bool, int]:
        """Read the ledger's fields ``read`` (and, with ``read_claim``, the in-flight claim
        ``claim_key``, in the same round trip), ``decide``, and write the decided fields with
        the audit entry in one step: only if the fields read are unchanged, else read and
        decide again. Returns the decision's answer, whether the claim was released, and how
        many fields the ledger hash had when read. A key of the wrong type raises
        :class:`WrongTypeError` naming it.

        ``release_claim_of``: a plan id whose claim ``claim_key`` is dropped (if it holds it)
        in the step that writes the ledger, where the server allows (the answer says)."""

    async def release_claim(self, claim_key: str, plan_id: str) -> bool:
        """Drop the in-flight claim ``claim_key`` if (and only if) ``plan_id`` holds it."""
        released = await self.scripts.release_claim(keys=[claim_key], args=[plan_id])
        return bool(int(released))

    @abstractmethod
    async def snapshot_touch(self, snapshot_keys: Sequence[str], ts: str, ts_iso: str) -> list[int]:
        """The new time (``ts_epoch``, ``ts_iso``) on each snapshot hash of
        ``snapshot_keys``; returns the indexes (0-based) of those that were gone or of
        another type (nothing written for them: the caller writes them whole)."""

    # -- the operator --------------------------------------------------------------------

    @abstractmethod
    async def set_trading_state(
        self, state_key: str, value: str, audit_stream: str, audit: Mapping[str, str]
    ) -> None:
        """SET the trading state with its audit entry: never an entry for a change that did
        not happen."""

    # -- readers -------------------------------------------------------------------------

    @abstractmethod
    async def read_streams(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, list[RawEntry]]]:
        """XREAD of several streams (stream → last id), undecoded, waiting up to
        ``block_ms`` for the first entry: ``[(stream, entries)]``."""


class ServerSteps(AtomicSteps):
    """A plain server or a Sentinel master: one script per step."""

    async def publish_plan(
        self,
        dedupe_key: str,
        stream: str,
        fields: Sequence[str],
        *,
        ttl_s: int,
        maxlen: int,
        audit: PlanAudit | None = None,
    ) -> str | None:
        keys = [dedupe_key, stream]
        args: list[Any] = [ttl_s, maxlen, len(fields), *fields]
        if audit is not None:
            keys.append(audit.stream)
            args += [AUDIT_MAXLEN, *(audit.duplicate or ("", ""))]
            for k, v in audit.fields.items():
                args += [k, _open_context(v) if k == "context" else v]
        new_id: str | None = await self.scripts.publish_plan(keys=keys, args=args)
        return new_id or None

    async def write_permit(
        self,
        key: str,
        value: str,
        *,
        ttl_s: int,
        event_stream: str,
        event: Mapping[str, str],
        audit_stream: str,
        audit: Mapping[str, str],
    ) -> bool:
        # one pipeline, in order: the event never reaches the executor before its permit
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, value, ex=ttl_s, nx=True)
        pipe.xadd(event_stream, event, maxlen=PERMIT_EVENTS_MAXLEN, approximate=True)
        pipe.xadd(audit_stream, audit, maxlen=AUDIT_MAXLEN, approximate=True)
        replies = await pipe.execute()
        return bool(replies[0])

    async def claim_and_write_permit(
        self,
        claim_key: str,
        claim_ms: int,
        key: str,
        value: str,
        *,
        plan_id: str,
        layer: str,
        ttl_s: int,
        event_stream: str,
        audit_stream: str,
        audit: Mapping[str, str],
    ) -> tuple[str, str]:
        verdict, holder = await self.scripts.p33_claim_permit(
            keys=[claim_key, key, event_stream, audit_stream],
            args=[
                plan_id,
                claim_ms,
                value,
                ttl_s,
                PERMIT_EVENTS_MAXLEN,
                AUDIT_MAXLEN,
                layer,
                *flat_pairs(audit),
            ],
        )
        return str(verdict), str(holder)

    async def exec_move(
        self,
        keys: ExecKeys,
        plan_id: str,
        *,
        from_states: Iterable[str],
        to: str,
        fields: Mapping[str, str] | None,
        index: str,
        guard: str,
        result: Mapping[str, str] | None,
        audit: Mapping[str, str] | None,
        ttl_s: int,
    ) -> tuple[bool, str]:
        res = await self.scripts.exec_transition(
            keys=_transition_keys(keys),
            args=[
                ",".join(from_states),
                to,
                guard,
                index,
                plan_id,
                ttl_s,
                RESULT_MAXLEN,
                AUDIT_MAXLEN,
                *flat_pairs(fields or {}),
                *flat_pairs(result or {}),
                *flat_pairs(audit or {}),
            ],
        )
        return bool(int(res[0])), str(res[1])

    async def exec_submit(
        self, keys: ExecKeys, state_key: str, plan_id: str, *, fields: Mapping[str, str], ttl_s: int
    ) -> tuple[Any, bool, str]:
        script_keys = _transition_keys(keys)
        args = [
            "permitted",
            "submitted",
            "",
            "add",
            plan_id,
            ttl_s,
            RESULT_MAXLEN,
            AUDIT_MAXLEN,
            *flat_pairs(fields),
            "0",
            "0",
        ]
        script = self.scripts.exec_transition
        # raw bytes: a value that is not UTF-8 must read as such, not fail the read
        if isinstance(script, LeanScript):  # the read and the script in one write
            (state_reply,), res = await script.after_reads(
                [(("GET", state_key), True)], script_keys, args
            )
            return state_reply, bool(int(res[0])), str(res[1])
        pipe = self.redis.pipeline(transaction=False)
        queue_raw(pipe, "GET", state_key)
        await script(keys=script_keys, args=args, client=pipe)
        state_reply, res = await pipe.execute(raise_on_error=False)
        if isinstance(res, BaseException):
            raise res
        return state_reply, bool(int(res[0])), str(res[1])

    async def write_ledger(
        self,
        ledger_key: str,
        audit_stream: str,
        decide: LedgerDecide[T],
        *,
        read: Sequence[str],
        claim_key: str,
        read_claim: bool = False,
        release_claim_of: str | None = None,
    ) -> tuple[T, bool, int]:
        """``ledger_apply.lua`` on the ledger, the audit stream and (``release_claim_of``)
        the claim: a WATCH/MULTI transaction in one round trip."""
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(ledger_key, read)
            pipe.hlen(ledger_key)
            if read_claim:
                pipe.get(claim_key)
            replies = await pipe.execute(raise_on_error=False)
            fault = await first_fault(
                self.redis,
                replies,
                [(ledger_key, "hash"), (ledger_key, "hash"), (claim_key, "string")],
            )
            if fault is not None:  # a wrong type: WrongTypeError naming the key
                raise fault
            h = {f: v for f, v in zip(read, replies[0], strict=True) if v is not None}
            size = int(replies[1])
            answer, w = decide(h, replies[-1] if read_claim else None)
            if w is None:
                return answer, False, size
            fields, audit = w
            expect = flat_pairs({f: h.get(f, ABSENT) for f in read})
            script_keys = [ledger_key, audit_stream]
            args = [AUDIT_MAXLEN, ABSENT, *expect, *flat_pairs(fields), *flat_pairs(audit)]
            if release_claim_of is not None:
                script_keys.append(claim_key)
                args.append(release_claim_of)
            written = await self.scripts.ledger_apply(keys=script_keys, args=args)
            if int(written):
                return answer, release_claim_of is not None, size

    async def snapshot_touch(self, snapshot_keys: Sequence[str], ts: str, ts_iso: str) -> list[int]:
        gone = await self.scripts.snapshot_touch(keys=list(snapshot_keys), args=[ts, ts_iso])
        return [int(i) - 1 for i in gone]

    async def set_trading_state(
        self, state_key: str, value: str, audit_stream: str, audit: Mapping[str, str]
    ) -> None:
        """One MULTI/EXEC: never a state without the entry that says who set it and why."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(state_key, value)
        pipe.xadd(audit_stream, audit, maxlen=AUDIT_MAXLEN, approximate=True)
        await pipe.execute()

    async def read_streams(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, list[RawEntry]]]:
        return await xread_raw(self.redis, positions, count=count, block_ms=block_ms)


class ClusterSteps(AtomicSteps):
    """A Redis Cluster: each step split into its single-slot part and the writes to the other
    slots, in crash-safe order (module docstring)."""

    async def publish_plan(
        self,
        dedupe_key: str,
        stream: str,
        fields: Sequence[str],
        *,
        ttl_s: int,
        maxlen: int,
        audit: PlanAudit | None = None,
    ) -> str | None:
        """``SET dedupe pending:<ts> NX EX``, the XADD, then the dedupe key set to the entry
        id; then the audit entry. A publisher that dies in between leaves the key pending;
        the proposal is redelivered (or swept), and a publisher finding a pending mark older
        than ``PENDING_STALE_S`` takes it over and adds the plan (again, if the first XADD
        had landed: every plan consumer is idempotent per plan)."""
        entry_id = await self._publish_split(dedupe_key, stream, fields, ttl_s, maxlen)
        if audit is not None and (entry_id or audit.duplicate is not None):
            await self.redis.xadd(
                audit.stream, _with_entry_id(audit, entry_id), maxlen=AUDIT_MAXLEN, approximate=True
            )
        return entry_id

    async def _publish_split(
        self, key: str, stream: str, flat: Sequence[str], ttl_s: int, maxlen: int
    ) -> str | None:
        r, mark = self.redis, f"{PENDING}{time.time():.6f}"
        if not await r.set(key, mark, nx=True, ex=ttl_s):
            try:
                seen = await r.get(key)
            except redis.exceptions.ResponseError as e:
                if not is_wrong_type(e):
                    raise
                raise await wrong_type(r, key, "string") from e
            if seen is None or not seen.startswith(PENDING):
                return None  # published (the entry id), or expired: the plan is old news
            if time.time() - float(seen.removeprefix(PENDING)) < PENDING_STALE_S:
                return None  # its publisher is at work
            if await r.set(key, mark, xx=True, keepttl=True, get=True) != seen:
                return None  # another publisher took it over first
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        entry_id = str(await r.xadd(stream, fields, maxlen=maxlen, approximate=True))
        await r.set(key, entry_id, xx=True, keepttl=True)
        return entry_id

    async def write_permit(
        self,
        key: str,
        value: str,
        *,
        ttl_s: int,
        event_stream: str,
        event: Mapping[str, str],
        audit_stream: str,
        audit: Mapping[str, str],
    ) -> bool:
        """A cluster pipeline is split by node and keeps no order across nodes: the permit is
        written first, the event and the audit entry after it."""
        created = await self.redis.set(key, value, ex=ttl_s, nx=True)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(event_stream, event, maxlen=PERMIT_EVENTS_MAXLEN, approximate=True)
        pipe.xadd(audit_stream, audit, maxlen=AUDIT_MAXLEN, approximate=True)
        await pipe.execute()
        return bool(created)

    async def claim_and_write_permit(
        self,
        claim_key: str,
        claim_ms: int,
        key: str,
        value: str,
        *,
        plan_id: str,
        layer: str,
        ttl_s: int,
        event_stream: str,
        audit_stream: str,
        audit: Mapping[str, str],
    ) -> tuple[str, str]:
        """The claim (SET NX PX), then, unless another plan holds it, the permit as
        :meth:`write_permit` writes it: its event and audit entry follow the SET NX
        whatever it answered, so the answer is ``allow`` then (never ``exists``)."""
        claimed = await self.redis.set(claim_key, plan_id, nx=True, px=claim_ms)
        holder = None if claimed else await self.redis.get(claim_key)
        if holder not in (None, plan_id):
            return "held", str(holder)
        await self.write_permit(
            key,
            value,
            ttl_s=ttl_s,
            event_stream=event_stream,
            event={"plan_id": plan_id, "layer": layer},
            audit_stream=audit_stream,
            audit=audit,
        )
        return "allow", holder or ""

    async def exec_move(
        self,
        keys: ExecKeys,
        plan_id: str,
        *,
        from_states: Iterable[str],
        to: str,
        fields: Mapping[str, str] | None,
        index: str,
        guard: str,
        result: Mapping[str, str] | None,
        audit: Mapping[str, str] | None,
        ttl_s: int,
    ) -> tuple[bool, str]:
        """The plan put in the open index first (ZADD NX: an extra entry is harmless, the
        resolver checks the record), then ``exec_move.lua`` on the record alone: the
        compare-and-set, with the result and audit entry kept in the record's ``outbox``
        field (and the guard ``pending``); then they are added to their streams, the outbox
        cleared and the guard set to the entry id (``exec_outbox_done.lua``), and the plan
        taken out of the open index last. A crash between leaves the outbox, which the
        resolver's sweep of the open index publishes (:meth:`flush_exec_outbox`)."""
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
            await self.redis.zadd(keys.open_index, {plan_id: time.time()}, nx=True)
        res = await self.scripts.exec_move(
            keys=[keys.record],
            args=[
                ",".join(from_states),
                to,
                guard,
                ttl_s,
                outbox,
                1 if result is not None else 0,
                *flat_pairs(fields or {}),
            ],
        )
        moved = bool(int(res[0]))
        if moved and index == "add":
            # again after the move: a resolver that checked the record in between (still not
            # open) took the entry out; an order is about to be sent, so it must be listed
            await self.redis.zadd(keys.open_index, {plan_id: time.time()}, nx=True)
        if moved and outbox:
            await self._publish_outbox(keys, plan_id, outbox)
        elif moved and index == "rem":
            await self.redis.zrem(keys.open_index, plan_id)
        return moved, str(res[1])

    async def exec_submit(
        self, keys: ExecKeys, state_key: str, plan_id: str, *, fields: Mapping[str, str], ttl_s: int
    ) -> tuple[Any, bool, str]:
        """The read, then the cluster move (two and more round trips)."""
        pipe = self.redis.pipeline(transaction=False)
        queue_raw(pipe, "GET", state_key)
        (state_reply,) = await pipe.execute(raise_on_error=False)
        moved, now = await self.exec_move(
            keys,
            plan_id,
            from_states=("permitted",),
            to="submitted",
            fields=fields,
            index="add",
            guard="",
            result=None,
            audit=None,
            ttl_s=ttl_s,
        )
        return state_reply, moved, now

    async def write_ledger(
        self,
        ledger_key: str,
        audit_stream: str,
        decide: LedgerDecide[T],
        *,
        read: Sequence[str],
        claim_key: str,
        read_claim: bool = False,
        release_claim_of: str | None = None,
    ) -> tuple[T, bool, int]:
        """The audit stream and the claim are in other slots: ``ledger_apply.lua`` runs on
        the ledger alone and puts the audit entry in an outbox field of the ledger; it is
        added to the stream right after and the field deleted. An outbox a crash left
        behind is flushed by the symbol's next ledger write (so the whole hash is read).
        The claim is never released here (the answer says so): the caller releases it."""
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(ledger_key)
            if read_claim:
                pipe.get(claim_key)
            replies = await pipe.execute(raise_on_error=False)
            fault = await first_fault(
                self.redis, replies, [(ledger_key, "hash"), (claim_key, "string")]
            )
            if fault is not None:  # a wrong type: WrongTypeError naming the key
                raise fault
            h: dict[str, str] = replies[0]
            size = len(h)
            answer, w = decide(h, replies[-1] if read_claim else None)
            if w is None:
                return answer, False, size
            fields, audit = w
            expect = flat_pairs({f: h.get(f, ABSENT) for f in read})
            field = f"{AUDIT_OUTBOX}{time.time():.6f}:{uuid.uuid4().hex[:8]}"
            box = json.dumps(audit, separators=(",", ":"))
            written = await self.scripts.ledger_apply(
                keys=[ledger_key],
                args=[AUDIT_MAXLEN, ABSENT, *expect, *flat_pairs({**fields, field: box}), "0"],
            )
            if int(written):
                outboxes = {**stale_outboxes(h), field: box}
                await self.flush_ledger_outboxes(ledger_key, audit_stream, outboxes)
                return answer, False, size

    async def flush_ledger_outboxes(
        self, ledger_key: str, audit_stream: str, outboxes: Mapping[str, str]
    ) -> int:
        """Add each outbox's audit entry to the audit stream, then delete its field (at least
        once: a crash between the two adds it again on the next flush). Returns how many."""
        for field, raw in outboxes.items():
            try:
                audit = json.loads(raw)
            except json.JSONDecodeError:
                audit = None
            if isinstance(audit, dict):
                await self.redis.xadd(audit_stream, audit, maxlen=AUDIT_MAXLEN, approximate=True)
            await self.redis.hdel(ledger_key, field)
        return len(outboxes)

    async def snapshot_touch(self, snapshot_keys: Sequence[str], ts: str, ts_iso: str) -> list[int]:
        """The keys are in many slots: one HSET each, in one pipeline. HSET creates the hash
        if it was gone (2 new fields), or fails on a key of another type: both reported."""
        pipe = self.redis.pipeline(transaction=False)
        for key in snapshot_keys:
            pipe.hset(key, mapping={"ts_epoch": ts, "ts_iso": ts_iso})
        replies = await pipe.execute(raise_on_error=False)
        return [i for i, n in enumerate(replies) if isinstance(n, BaseException) or int(n) != 0]

    async def set_trading_state(
        self, state_key: str, value: str, audit_stream: str, audit: Mapping[str, str]
    ) -> None:
        """The state key and the audit stream are in different slots: written one after the
        other, the state first (a crash between leaves the state set without its entry;
        never an entry for a change that did not happen)."""
        await self.redis.set(state_key, value)
        await self.redis.xadd(audit_stream, audit, maxlen=AUDIT_MAXLEN, approximate=True)

    async def read_streams(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, list[RawEntry]]]:
        """Streams in different slots cannot share one XREAD: each is read without blocking,
        polled until ``block_ms``."""
        if len(positions) <= 1:
            return await xread_raw(self.redis, positions, count=count, block_ms=block_ms)
        deadline = time.monotonic() + block_ms / 1000
        while True:
            out: list[tuple[str, list[RawEntry]]] = []
            for stream, last in positions.items():
                out += await xread_raw(self.redis, {stream: last}, count=count, block_ms=None)
            if out or time.monotonic() >= deadline:
                return out
            await asyncio.sleep(0.02)


def _transition_keys(keys: ExecKeys) -> list[str]:
    return [keys.record, keys.open_index, keys.results, keys.audit]


_BY_CLIENT: weakref.WeakKeyDictionary[Any, AtomicSteps] = weakref.WeakKeyDictionary()


def steps_for(client: AsyncRedis) -> AtomicSteps:
    """The client's atomic steps, chosen once per client by its class: :class:`ClusterSteps`
    for a Redis Cluster client, :class:`ServerSteps` for any other."""
    s = _BY_CLIENT.get(client)
    if s is None:
        s = _BY_CLIENT[client] = ClusterSteps(client) if is_cluster(client) else ServerSteps(client)
    return s
