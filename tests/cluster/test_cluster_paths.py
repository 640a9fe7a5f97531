"""The cluster paths of every formerly cross-slot step, in-process against the local cluster.

* Every script invocation's KEYS and every transaction's keys hash to one slot (recorded from
  the calls the code makes, checked with ``redis.crc.key_slot``), and the single-node-only
  scripts (``publish_plan``, ``exec_transition``) are never run on a cluster.
* Crash windows: each split step is cut after its single-slot half (by running that half
  alone, as a crash would leave it) and the recovery path (planner redelivery, resolver,
  next ledger write, the simulated exchange's order record) publishes exactly what was
  missing; a duplicate entry is harmless (no second order, no second ledger apply).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio.cluster as aiocluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from permitchain.apply_layer.exec_store import FINAL_GUARD, ExecStore
from permitchain.apply_layer.orders import OrderDesk
from permitchain.apply_layer.planner_service import publish_plan
from permitchain.apply_layer.resolver import Resolver
from permitchain.cli.control import set_trading_state
from permitchain.contract.errors import OrderOutcomeUnknown, OrderRejected
from permitchain.contract.keys import Keys
from permitchain.contract.models import Result, ResultStatus
from permitchain.contract.settings import Settings
from permitchain.contract.trading_state import TradingState
from permitchain.exchange.sim import SimExchange
from permitchain.governor.rates import Settlement
from permitchain.governor.store import GovernorStore
from permitchain.position_brain.state import apply_result, reconcile, release_claim
from permitchain.runtime.clock import SystemClock
from permitchain.store import is_cluster
from permitchain.store.scripts import Scripts, source
from permitchain.store.scripts import names as script_names
from permitchain.store.steps import AUDIT_OUTBOX, OUTBOX, PENDING

Run = Callable[[Callable[[Any], Any]], Any]
SINGLE_NODE_ONLY = {"publish_plan", "exec_transition", "p33_claim_permit", "snapshot_touch"}
P0, P1, P2, P3, P4, PX = (f"{n:016x}" for n in (0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xAF))


class Calls:
    """What the code sent: each script's name and KEYS, each transaction's keys."""

    def __init__(self) -> None:
        self.scripts: list[tuple[str, list[str]]] = []
        self.transactions: list[list[str]] = []


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    seen = Calls()
    names = {source(n): n for n in script_names()}  # the bodies sent: includes expanded
    script_call = AsyncScript.__call__
    pipe_watch = aiocluster.ClusterPipeline.watch
    pipe_execute = aiocluster.ClusterPipeline.execute

    async def spy_script(
        self: AsyncScript, keys: Any = None, args: Any = None, client: Any = None
    ) -> Any:
        seen.scripts.append((names[self.script], list(keys or [])))
        return await script_call(self, keys=keys, args=args, client=client)

    async def spy_watch(self: Any, *names_: str) -> Any:
        self._pc_watched = [*getattr(self, "_pc_watched", []), *names_]
        return await pipe_watch(self, *names_)

    async def spy_execute(self: Any, *a: Any, **kw: Any) -> Any:
        if self._transaction:
            queued = [str(c.args[1]) for c in self._execution_strategy._command_queue]
            seen.transactions.append([*getattr(self, "_pc_watched", []), *queued])
        return await pipe_execute(self, *a, **kw)

    monkeypatch.setattr(AsyncScript, "__call__", spy_script)
    monkeypatch.setattr(aiocluster.ClusterPipeline, "watch", spy_watch)
    monkeypatch.setattr(aiocluster.ClusterPipeline, "execute", spy_execute)
    yield seen


def result(plan_id: str, symbol: str = "BTCUSDT", qty: str = "0.01") -> Result:
    return Result(
        plan_id=plan_id,
        symbol=symbol,
        executed=True,
        status=ResultStatus.FILLED,
        reason="filled",
        order_id="1",
        client_order_id=f"pc-{plan_id}",
        side="SELL",
        requested_qty=Decimal(qty),
        filled_qty=Decimal(qty),
        ts=time.time(),
    )


def plan_fields(plan_id: str) -> list[str]:
    return ["plan_id", plan_id, "symbol", "BTCUSDT", "decision", "EXECUTE"]


def results_of(entries: list[tuple[str, dict[str, str]]], plan_id: str) -> list[str]:
    return [i for i, f in entries if f.get("plan_id") == plan_id]


def test_every_script_and_transaction_is_single_slot(
    arun: Run, keys: Keys, calls: Calls, settings: Settings
) -> None:
    async def body(r: Any) -> None:
        assert is_cluster(r)
        store = ExecStore(r, keys)
        await publish_plan(r, keys, P1, 60, 1000, plan_fields(P1))
        await store.consume(P1, "BTCUSDT", "try")
        await store.block_new(P2, "BTCUSDT", "plan_expired", "old")
        blocked = Result(
            plan_id=P2,
            symbol="BTCUSDT",
            executed=False,
            reason="plan_expired",
            status=ResultStatus.BLOCKED,
            ts=time.time(),
        )
        await store.publish(blocked, from_states=("blocked",), to="blocked")
        await r.hset(keys.exec_record(P3), mapping={"state": "permitted"})
        await store.move(P3, from_states=("permitted",), to="submitted", index="add")
        await store.publish(result(P3), from_states=("submitted",), to="filled")
        await r.hset(keys.exec_record(P4), mapping={"state": "permitted"})
        state, moved, now = await store.submit(P4, fields={"sender": "t"})
        assert (state, moved, now) == (TradingState.ACTIVE, True, "submitted")
        assert await r.zscore(store.open_key, P4) is not None
        gov = GovernorStore(r, keys)
        await gov.reserve("BTCUSDT", P3, time.time(), 30, 5, 20)
        await gov.settle("BTCUSDT", P3, Settlement.CONFIRM, time.time())
        await gov.add_notional(P3, Decimal(10), time.time())
        sim = SimExchange(r, keys)
        await sim.list_symbol("BTCUSDT", step_size="0.001", min_qty="0.001", min_notional="0")
        await sim.set_position("BTCUSDT", Decimal("1"), Decimal(100))
        await sim.place_reduce_only_market("BTCUSDT", "SELL", Decimal("0.01"), "pc-p3")
        await sim.place_stop_market("BTCUSDT", "SELL", Decimal(90), Decimal("0.5"), "pc-p3-sl")
        await r.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "1", "epoch": "0"})
        await apply_result(r, keys, result(P3), "1-0")
        await reconcile(r, keys, "BTCUSDT", Decimal("0.99"), operator="t", note="n")
        await r.set(keys.inflight("BTCUSDT"), P4)  # the claim is in another slot: a 2nd call
        await apply_result(r, keys, result(P4), "2-0", release=True)
        assert await r.get(keys.inflight("BTCUSDT")) is None
        await r.set(keys.inflight("BTCUSDT"), P3)
        await release_claim(r, keys, "BTCUSDT", P3)
        await set_trading_state(r, keys, settings, TradingState.REDUCING, reason="t", operator="t")

    arun(body)
    assert calls.scripts and calls.transactions
    for name, ks in calls.scripts:
        assert len({key_slot(k.encode()) for k in ks}) == 1, (name, ks)
    for ks in calls.transactions:
        assert len({key_slot(k.encode()) for k in ks}) == 1, ks
    lua = set(script_names())
    ran = {name for name, _ in calls.scripts}
    assert ran == lua - SINGLE_NODE_ONLY, (ran, lua)
    print(
        f"\n{len(calls.scripts)} script calls, {len(calls.transactions)} transactions, "
        f"each on one slot"
    )


def test_publish_crash_before_xadd_is_published_by_the_redelivery(arun: Run, keys: Keys) -> None:
    async def body(r: Any) -> None:
        key = keys.dedupe(P1)
        # the planner died after marking the dedupe key, before its XADD
        await r.set(key, f"{PENDING}{time.time():.6f}", ex=60)
        # a publisher while the mark is young (the sweep racing the live path): nothing
        assert await publish_plan(r, keys, P1, 60, 1000, plan_fields(P1)) is None
        await r.set(key, f"{PENDING}{time.time() - 10:.6f}", ex=60)
        # the redelivery finds a stale mark: takes it over and publishes, once
        entry = await publish_plan(r, keys, P1, 60, 1000, plan_fields(P1))
        assert entry and await r.get(key) == entry and 0 < await r.ttl(key) <= 60
        assert await publish_plan(r, keys, P1, 60, 1000, plan_fields(P1)) is None
        assert [i for i, _ in await r.xrange(keys.plan_stream)] == [entry]

    arun(body)


def test_exec_move_crash_before_streams_is_published_by_the_resolver(arun: Run, keys: Keys) -> None:
    async def body(r: Any) -> None:
        store = ExecStore(r, keys)
        res = result(P1)
        await r.hset(keys.exec_record(P1), mapping={"state": "submitted"})
        await r.zadd(store.open_key, {P1: time.time()})
        # the move's single-slot half alone, as a crash right after it leaves it
        box = {
            "result": res.to_fields(),
            "audit": {"plan_id": P1, "x": "1"},
            "token": "t",
            "guard": FINAL_GUARD,
            "index": "rem",
            "at": time.time() - 60,
        }
        outbox = json.dumps(box)
        await store.steps.scripts.exec_move(
            keys=[keys.exec_record(P1)], args=["submitted", "filled", FINAL_GUARD, 60, outbox, 1, 0]
        )
        h = await store.get(P1)
        assert h["state"] == "filled" and h[FINAL_GUARD] == "pending" and h[OUTBOX] == outbox
        assert not results_of(await r.xrange(keys.result_stream), P1)
        # a redelivered plan's resume sees the guard: it publishes nothing itself
        resolver = Resolver(
            store,
            OrderDesk(SimExchange(r, keys), store, SystemClock()),
            SimExchange(r, keys),
            SystemClock(),
            grace_s=5.0,
        )
        assert await resolver.recover_all() == 1
        results = results_of(await r.xrange(keys.result_stream), P1)
        h = await store.get(P1)
        assert len(results) == 1 and h[FINAL_GUARD] == results[0] and OUTBOX not in h
        assert results_of(await r.xrange(keys.decisions), P1) != []
        assert await r.zscore(store.open_key, P1) is None
        # again: nothing more (the outbox is gone, the plan out of the open index)
        await r.zadd(store.open_key, {P1: time.time() - 60})
        await resolver.recover_all()
        assert len(results_of(await r.xrange(keys.result_stream), P1)) == 1
        # a young outbox is the live path's: the resolver leaves it alone
        await r.hset(
            keys.exec_record(P2),
            mapping={
                "state": "blocked",
                FINAL_GUARD: "pending",
                OUTBOX: json.dumps({**box, "at": time.time()}),
            },
        )
        await r.zadd(store.open_key, {P2: time.time()})
        await resolver.recover_all()
        assert OUTBOX in await store.get(P2)

    arun(body)


def test_duplicate_result_is_applied_once(arun: Run, keys: Keys) -> None:
    """A crash after the result's XADD, before the outbox is cleared: the resolver adds the
    result again. The ledger applies a plan once; the governor's settle is idempotent."""

    async def body(r: Any) -> None:
        await r.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "1", "epoch": "0"})
        res = result(P1)
        first = await apply_result(r, keys, res, "1-0")
        second = await apply_result(r, keys, res, "2-0")
        assert first.applied and not second.applied and second.reason == "duplicate_plan"
        assert await r.hget(keys.ledger("BTCUSDT"), "last_known_amt") == "0.99"
        gov = GovernorStore(r, keys)
        for _ in range(2):
            await gov.settle("BTCUSDT", P1, Settlement.CONFIRM, res.ts)
        assert await r.zcard(keys.governor_executions("BTCUSDT")) == 1

    arun(body)


def test_ledger_audit_outbox_left_by_a_crash_is_flushed_by_the_next_write(
    arun: Run, keys: Keys
) -> None:
    async def body(r: Any) -> None:
        led = keys.ledger("BTCUSDT")
        await r.hset(led, mapping={"last_known_amt": "1", "epoch": "0"})
        # the MULTI's half alone: the ledger written with its audit entry in the outbox
        lost = {"plan_id": P0, "layer": "position-brain", "decision": "LEDGER_APPLY"}
        field = f"{AUDIT_OUTBOX}{time.time() - 60:.6f}:dead"
        await r.hset(led, field, json.dumps(lost))
        fresh = f"{AUDIT_OUTBOX}{time.time():.6f}:live"  # a live writer's: not flushed
        await r.hset(led, fresh, json.dumps({"plan_id": PX}))
        await apply_result(r, keys, result(P1), "1-0")
        audit = await r.xrange(keys.decisions)
        assert [f["decision"] for _i, f in audit if f.get("plan_id") == P0] == ["LEDGER_APPLY"]
        assert [f["decision"] for _i, f in audit if f.get("plan_id") == P1] == ["LEDGER_APPLY"]
        h = await r.hgetall(led)
        assert field not in h and fresh in h and h["last_known_amt"] == "0.99"
        assert not [f for f in h if f.startswith(AUDIT_OUTBOX) and f != fresh]

    arun(body)


def test_sim_crash_before_fill_record_never_fills_twice(arun: Run, keys: Keys) -> None:
    async def body(r: Any) -> None:
        sim = SimExchange(r, keys)
        await sim.list_symbol("BTCUSDT", step_size="0.001", min_qty="0.001", min_notional="0")
        await sim.set_position("BTCUSDT", Decimal("1"), Decimal(100))
        pos = keys.sim_position("BTCUSDT")
        order = keys.sim_order("BTCUSDT", "pc-p1")
        seq = keys.sim_order_seq("BTCUSDT")
        # the script alone (a crash before the fill record): order recorded, position moved
        args = [60, f"{time.time():.6f}", "BTCUSDT", "pc-p1", "SELL", "0.01", "fill"]
        res = await Scripts(r).sim_order(
            keys=[pos, order, seq, keys.sim_filters("BTCUSDT")], args=args
        )
        assert res[0] == "ok" and res[2]  # recorded, filled: the caller adds the fill record
        recorded = dict(zip(res[1][::2], res[1][1::2], strict=True))
        # the resend with the same client order id gets the recorded order: no second fill
        again = await sim.place_reduce_only_market("BTCUSDT", "SELL", Decimal("0.01"), "pc-p1")
        assert again.order_id == recorded["order_id"]
        assert await r.hget(pos, "amt") == "0.99"
        assert not await r.exists(keys.sim_fills)  # the record is lost with the crash, only
        # a normal order: its fill record follows the script, once
        await sim.place_reduce_only_market("BTCUSDT", "SELL", Decimal("0.01"), "pc-p2")
        fills = await r.xrange(keys.sim_fills)
        assert [f["client_order_id"] for _i, f in fills] == ["pc-p2"]

    arun(body)


def test_sim_faults_on_cluster_from_the_config_read_first(
    arun: Run, keys: Keys, calls: Calls
) -> None:
    """On a Cluster the config (outside the symbol's slot) is read before the script, its
    mode passed in ARGV, its latency slept; the fill record follows the script."""

    async def body(r: Any) -> dict[str, Any]:
        sim = SimExchange(r, keys)
        await sim.list_symbol("BTCUSDT", step_size="0.001", min_qty="0.001", min_notional="0")
        await sim.set_position("BTCUSDT", Decimal("1"), Decimal(100))
        out: dict[str, Any] = {}

        async def sell(coid: str) -> Any:
            try:
                return await sim.place_reduce_only_market("BTCUSDT", "SELL", Decimal("0.1"), coid)
            except (OrderRejected, OrderOutcomeUnknown) as e:
                return e

        for mode in ("reject", "timeout", "lose_response", "new"):
            await sim.set_fault(order_mode=mode)
            out[mode] = await sell(f"pc-{mode}")
        await sim.set_fault(order_mode="fill", latency_ms="200")
        t0 = time.monotonic()
        out["slow"] = await sell("pc-slow")
        out["slow_s"] = time.monotonic() - t0
        out["fills"] = [f["client_order_id"] for _i, f in await r.xrange(keys.sim_fills)]
        out["amt"] = await r.hget(keys.sim_position("BTCUSDT"), "amt")
        return out

    out = arun(body)
    assert isinstance(out["reject"], OrderRejected) and out["reject"].code == -2019
    assert isinstance(out["timeout"], OrderOutcomeUnknown)
    assert isinstance(out["lose_response"], OrderOutcomeUnknown)
    assert out["new"].status.value == "NEW"
    assert out["slow"].status.value == "FILLED" and out["slow_s"] >= 0.2
    assert out["fills"] == ["pc-lose_response", "pc-slow"] and out["amt"] == "0.8"
    sim_keys = [k for name, k in calls.scripts if name == "sim_order"]
    assert len(sim_keys) == 5 and all(len(k) == 4 for k in sim_keys)  # the symbol's keys only


def test_trading_state_on_cluster_writes_state_then_audit(
    arun: Run, keys: Keys, settings: Settings
) -> None:
    async def body(r: Any) -> None:
        _before, after = await set_trading_state(
            r, keys, settings, TradingState.HALTED, reason="drill", operator="t"
        )
        assert after is TradingState.HALTED
        audit = await r.xrange(keys.decisions)
        assert [f["decision"] for _i, f in audit] == ["TRADING_HALTED"]

    arun(body)


def test_p33_claim_on_cluster_is_the_claim_then_the_permit(
    arun: Run, keys: Keys, calls: Calls, settings: Settings
) -> None:
    """With COOLDOWN_S > 0 a cluster keeps the two steps (the claim and the permit are in
    different slots): SET NX PX on the claim, then the permit; a second plan is denied."""
    from tests.position_brain.helpers import brain, plan

    a, b = plan(tranche=1), plan(tranche=2)

    async def body(r: Any) -> list[dict[str, Any]]:
        assert is_cluster(r)
        pb, sim = brain(r, keys, settings, cooldown_s=15.0)
        await sim.list_symbol("BTCUSDT")
        await sim.set_position("BTCUSDT", Decimal("0.062"), Decimal(100))
        await pb.snapshots.poll_once()
        await pb.handle_plan("1-0", a.to_fields())
        await pb.handle_plan("2-0", b.to_fields())
        assert await r.get(keys.inflight("BTCUSDT")) == a.plan_id
        return [json.loads(await r.get(keys.permit_p33(p.plan_id))) for p in (a, b)]

    first, second = arun(body)
    assert first["allow"] is True
    assert second["reason"] == "cooldown_in_flight"
    assert second["context"]["in_flight_plan"] == a.plan_id
    assert "p33_claim_permit" not in {name for name, _ in calls.scripts}


def test_snapshot_touch_on_cluster_is_one_hset_each(
    arun: Run, keys: Keys, calls: Calls, settings: Settings
) -> None:
    """A full poll's unchanged snapshots get only their new time; on a cluster (keys in many
    slots) one HSET each instead of the script, and a vanished hash is written whole."""
    from tests.position_brain.helpers import brain

    syms = [f"S{i}USDT" for i in range(5)]

    async def body(r: Any) -> tuple[Any, Any, dict[str, str], dict[str, str]]:
        assert is_cluster(r)
        pb, sim = brain(r, keys, settings)
        for s in syms:
            await sim.list_symbol(s)
            await sim.set_position(s, Decimal("0.5"), Decimal(100))
        first = await pb.snapshots.poll_once()
        await r.hset(keys.snapshot(syms[0]), "entry_price", "marker")  # kept by a touch
        await r.delete(keys.snapshot(syms[1]))
        second = await pb.snapshots.poll_once()
        return (
            first,
            second,
            await r.hgetall(keys.snapshot(syms[0])),
            await r.hgetall(keys.snapshot(syms[1])),
        )

    first, second, touched, rewritten = arun(body)
    assert second.ok and set(second.written) == set(syms)
    assert touched["ts_epoch"] == f"{second.ts:.6f}" != f"{first.ts:.6f}"
    assert touched["entry_price"] == "marker"
    assert rewritten["position_amt"] == "0.5" and rewritten["ts_epoch"] == f"{second.ts:.6f}"
    assert "snapshot_touch" not in {name for name, _ in calls.scripts}
