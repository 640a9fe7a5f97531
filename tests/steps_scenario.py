"""One run of every atomic step (``store/steps.py``), for any implementation on any server:
what each step answered and what it left in Redis, with entry ids and times taken out, so
that two implementations (or two servers) can be compared as equals.

The steps' answers differ between the implementations in two known places, returned under
their own names: P3.3's claim-and-permit for a plan that has its permit already (the Cluster
split writes as ``write_permit`` does: ``allow``, never ``exists``), and the ledger write's
release of the claim (in the same step on a single server; the caller's on a Cluster)."""

from __future__ import annotations

import json
import time
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.runtime.audit import audit_fields
from permitchain.runtime.entries import show
from permitchain.store.steps import OUTBOX, AtomicSteps, ExecKeys, PlanAudit

P1, P2, P3, P4 = (f"{n:016x}" for n in (0xB1, 0xB2, 0xB3, 0xB4))
SYM = "BTCUSDT"
#: The answers that differ by topology, as each implementation gives them.
SERVER_ONLY = {"claim_again": ("exists", ""), "ledger_release": (True, None)}
CLUSTER_ONLY = {"claim_again": ("allow", ""), "ledger_release": (False, P1)}


def _audit(decision: str, plan_id: str = P1, **context: Any) -> dict[str, str]:
    return audit_fields(
        plan_id=plan_id, layer="t", decision=decision, reason="r", context=context, ts=1.0
    )


async def _entries(r: Any, stream: str) -> list[dict[str, Any]]:
    """The stream's entries' fields, the ids left out and ``entry_id``s in contexts blanked
    to whether there was one."""
    out = []
    for _i, fields in await r.xrange(stream):
        f: dict[str, Any] = dict(fields)
        if "context" in f:
            ctx = json.loads(f["context"])
            if "entry_id" in ctx:
                ctx["entry_id"] = bool(ctx["entry_id"])
            f["context"] = ctx
        out.append(f)
    return out


class Run:
    """One run: each method a service's steps, what came of them in ``out``."""

    def __init__(self, steps: AtomicSteps, keys: Keys) -> None:
        self.steps, self.keys, self.r = steps, keys, steps.redis
        self.out: dict[str, Any] = {}
        k = keys
        self.exec = ExecKeys(k.exec_record(P1), f"{k.prefix}:open", k.result_stream, k.decisions)

    async def planner(self) -> None:
        """A new plan, then the same again (a duplicate, audited)."""
        k, out = self.keys, self.out
        decision = _audit("EXECUTE", ctx="x")
        audit = PlanAudit(k.decisions, decision, ("DUPLICATE", "duplicate_plan"))
        plan = ["plan_id", P1, "symbol", SYM]
        args: dict[str, Any] = {"ttl_s": 60, "maxlen": 1000, "audit": audit}
        first = await self.steps.publish_plan(k.dedupe(P1), k.plan_stream, plan, **args)
        again = await self.steps.publish_plan(k.dedupe(P1), k.plan_stream, plan, **args)
        out["publish"] = (bool(first), again, await self.r.exists(k.dedupe(P1)))
        out["plans"] = await _entries(self.r, k.plan_stream)

    async def claim(self, plan_id: str) -> tuple[str, str]:
        k = self.keys
        return await self.steps.claim_and_write_permit(
            k.inflight(SYM),
            60_000,
            k.permit_p33(plan_id),
            f"p33-{plan_id}",
            plan_id=plan_id,
            layer="position-brain",
            ttl_s=60,
            event_stream=k.permit_event_stream,
            audit_stream=k.decisions,
            audit=_audit("ALLOW", plan_id),
        )

    async def permits(self) -> None:
        """Written once; the event and the entry follow the first write too."""
        k, out, r = self.keys, self.out, self.r
        written = []
        for value, decision in (("g1", "GRANT"), ("g2", "DENY")):
            written.append(
                await self.steps.write_permit(
                    k.permit_governor(P1),
                    value,
                    ttl_s=60,
                    event_stream=k.permit_event_stream,
                    event={"plan_id": P1, "layer": "governor"},
                    audit_stream=k.decisions,
                    audit=_audit(decision),
                )
            )
        out["write_permit"] = written
        out["governor_permit"] = await r.get(k.permit_governor(P1))
        out["claim"] = [await self.claim(P1), await self.claim(P2)]
        out["p33_permits"] = [await r.get(k.permit_p33(p)) for p in (P1, P2)]
        out["claim_holder"] = await r.get(k.inflight(SYM))
        out["events"] = await _entries(r, k.permit_event_stream)

    async def fill(self) -> tuple[bool, str]:
        return await self.steps.exec_move(
            self.exec,
            P1,
            from_states=("submitted",),
            to="filled",
            fields={"reason": "filled"},
            index="rem",
            guard="result_id",
            result={"plan_id": P1, "status": "filled"},
            audit=_audit("EXECUTED"),
            ttl_s=60,
        )

    async def executor(self) -> None:
        k, out, r, ek, steps = self.keys, self.out, self.r, self.exec, self.steps
        verdict = await steps.consume_permits(
            k.permit_governor(P3),
            k.permit_p33(P3),
            k.exec_record(P3),
            plan_id=P3,
            symbol=SYM,
            schema=1,
            mode="try",
            ttl_s=60,
        )
        out["consume"] = json.loads(verdict)["verdict"]
        out["block"] = await steps.block_plan(
            k.exec_record(P4), plan_id=P4, symbol=SYM, reason="plan_expired", detail="d", ttl_s=60
        )
        await r.hset(ek.record, mapping={"state": "permitted"})
        await r.set(k.trading_state, "REDUCING")
        reply, moved, now = await steps.exec_submit(
            ek, k.trading_state, P1, fields={"sender": "t"}, ttl_s=60
        )
        out["submit"] = (show(reply), moved, now, await r.zscore(ek.open_index, P1) is not None)
        out["move"] = await self.fill()
        record = await r.hgetall(ek.record)
        results = await r.xrange(k.result_stream)
        out["record"] = {f: v for f, v in record.items() if f not in ("result_id", "updated_at")}
        out["result_id"] = [i for i, _f in results] == [record.get("result_id")]
        out["results"] = [f for _i, f in results]
        out["open"] = await r.zrange(ek.open_index, 0, -1)
        out["flush_none"] = await steps.flush_exec_outbox(ek, P1, record, 0.0)
        # an outbox a crash left (only a Cluster's move writes one): published by either
        box = {"result": {"plan_id": P2}, "audit": {}, "guard": "result_id", "index": "rem"}
        left = json.dumps({**box, "at": time.time() - 60, "token": "t"})
        ek2 = ExecKeys(k.exec_record(P2), ek.open_index, ek.results, ek.audit)
        await r.hset(ek2.record, mapping={"state": "filled", OUTBOX: left})
        await r.zadd(ek.open_index, {P2: 1.0})
        out["flush_left"] = await steps.flush_exec_outbox(ek2, P2, await r.hgetall(ek2.record), 5)
        after = await r.hgetall(ek2.record)
        still_open = await r.zcard(ek.open_index)
        out["flushed"] = (OUTBOX in after, bool(after.get("result_id")), still_open)

    async def position_brain(self) -> None:
        """The ledger, decided from what was read, with the claim released where it can be;
        the claim alone; snapshots: one touched, one gone, one of another type."""
        k, out, r, steps = self.keys, self.out, self.r, self.steps
        led = k.ledger(SYM)
        await r.hset(led, mapping={"last_known_amt": "1"})

        def decide(h: dict[str, str], claim: str | None) -> tuple[Any, Any]:
            amt = str(int(h["last_known_amt"]) + 1)
            return (h["last_known_amt"], claim), ({"last_known_amt": amt}, _audit("LEDGER_APPLY"))

        ledger: dict[str, Any] = {"read": ("last_known_amt",), "claim_key": k.inflight(SYM)}
        (seen, held), released, size = await steps.write_ledger(
            led, k.decisions, decide, read_claim=True, release_claim_of=P1, **ledger
        )
        out["ledger"] = (seen, held, size, await r.hget(led, "last_known_amt"))
        out["ledger_release"] = (released, await r.get(k.inflight(SYM)))
        out["ledger_fields"] = sorted(await r.hkeys(led))
        out["ledger_nothing"] = await steps.write_ledger(
            led, k.decisions, lambda h, _c: (h["last_known_amt"], None), **ledger
        )
        await r.set(k.inflight(SYM), P2)
        out["release"] = [await steps.release_claim(k.inflight(SYM), p) for p in (P1, P2, P2)]
        snaps = [k.snapshot(s) for s in ("AUSDT", "BUSDT", "CUSDT")]
        await r.hset(snaps[0], mapping={"ts_epoch": "1", "ts_iso": "-", "position_amt": "1"})
        await r.set(snaps[2], "x")
        out["touch"] = await steps.snapshot_touch(snaps, "2.000000", "iso")
        out["touched"] = await r.hgetall(snaps[0])

    async def operator_and_readers(self) -> None:
        """The trading state with its entry; two streams read at once (a Cluster may hold
        them on different nodes)."""
        k, out, r, steps = self.keys, self.out, self.r, self.steps
        await steps.set_trading_state(k.trading_state, "HALTED", k.decisions, _audit("HALT"))
        out["trading_state"] = await r.get(k.trading_state)
        out["audit"] = await _entries(r, k.decisions)
        both = [k.plan_stream, k.result_stream]
        read = await steps.read_streams(dict.fromkeys(both, "0-0"), count=10, block_ms=100)
        out["read"] = sorted((s.removeprefix(k.prefix), len(es)) for s, es in read)
        none = await steps.read_streams(dict.fromkeys(both, "$"), count=10, block_ms=50)
        out["read_none"] = none


async def exercise(steps: AtomicSteps, keys: Keys) -> dict[str, Any]:
    """Every step once or more, against the keys of ``keys``; returns what came of it."""
    run = Run(steps, keys)
    await run.planner()
    await run.permits()
    await run.executor()
    await run.position_brain()
    await run.operator_and_readers()
    # last (what they write differs): a plan with its permit already, its claim gone; the
    # plan's move again (refused: the Cluster's lists the plan as open again first, which
    # the resolver's sweep takes out, the record being final)
    run.out["claim_again"] = await run.claim(P1)
    run.out["move_again"] = await run.fill()
    return run.out
