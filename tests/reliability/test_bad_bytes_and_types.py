"""The bad-input drill, second part: bytes that are not UTF-8 in every field of every stream
the services read, and a value of every wrong Redis type in every key they read, with the
services as separate processes.

Printed (``-s``): inputs tried, dead letters (by reason), entries left pending and the
longest pending idle seen (XPENDING; an entry pending over 30 s is a stuck consumer), orders
placed while the bad input ran, services alive, and the valid proposal filled afterwards.

* Bytes: each field (and one field name) of an otherwise valid entry of the proposal, plan,
  result and permit-event streams made invalid UTF-8. Each costs one dead letter per
  consumer group (``not_utf8``, its bytes escaped), the permit events none (skipped with a
  line: a wake-up only); nothing stays pending; no order.
* Types: in rounds, one per Redis type, every key a service reads is set to that type where
  it is the wrong one, each kind on its own allowlisted symbol (a position on the simulated
  exchange: an order that got through would fill), and a proposal is sent where a plan would
  read the key. Each plan ends with exactly one result, blocked (``wrong_key_type``,
  ``p33_denied`` on P3.3's ``wrong_key_type``, ``permit_invalid``, ``trading_halted``) or is
  never published (a dedupe key in the way: its proposal is one dead letter naming the key);
  P3.3 replaces a snapshot key of another type;
  the exit brain and the planner's sweep skip the symbol and go on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis

from permitchain.apply_layer.exec_store import open_index
from permitchain.apply_layer.planner_service import GROUP_PLANNER
from permitchain.chain import Chain
from permitchain.contract.keys import (
    GROUP_EXECUTOR,
    GROUP_GOVERNOR,
    GROUP_GOVERNOR_RESULTS,
    GROUP_P33,
    GROUP_P33_LEDGER,
    Keys,
)
from permitchain.contract.models import make_plan_id
from permitchain.governor.store import utc_day
from permitchain.runtime.entries import Entry, shown
from tests.reliability.harness import seed_positions, settle

pytestmark = pytest.mark.slow

STUCK_MS = 30_000
ACTION = "PARTIAL_25"
#: Per-symbol and per-plan keys: (name, type the contract says, key of (symbol, plan id),
#: whether a plan is sent that reads it). Each kind has its own symbol.
KINDS: dict[str, tuple[str, Callable[[Keys, str, str], str], bool]] = {
    "ledger": ("hash", lambda k, s, p: k.ledger(s), True),
    "inflight": ("string", lambda k, s, p: k.inflight(s), True),
    "exec": ("hash", lambda k, s, p: k.exec_record(p), True),
    "gov_permit": ("string", lambda k, s, p: k.permit_governor(p), True),
    "p33_permit": ("string", lambda k, s, p: k.permit_p33(p), True),
    "dedupe": ("string", lambda k, s, p: k.dedupe(p), True),
    "executions": ("zset", lambda k, s, p: k.governor_executions(s), True),
    "reservations": ("zset", lambda k, s, p: k.governor_reservations(s), True),
    "snapshot": ("hash", lambda k, s, p: k.snapshot(s), False),
    "exit_state": ("hash", lambda k, s, p: k.exit_state(s), False),
    "proposal": ("hash", lambda k, s, p: k.proposal(s), False),
}
#: Keys every plan reads: one round each, a plan on their own symbol.
GLOBAL: dict[str, tuple[str, Callable[[Keys], str]]] = {
    "trading_state": ("string", lambda k: k.trading_state),
    "notional": ("hash", lambda k: k.governor_notional(utc_day(time.time()))),
    "exec_open": ("zset", open_index),
}
WRITE: dict[str, Callable[[redis.Redis, str], Any]] = {
    "string": lambda r, key: r.set(key, "banana"),
    "hash": lambda r, key: r.hset(key, "x", "1"),
    "list": lambda r, key: r.rpush(key, "x"),
    "set": lambda r, key: r.sadd(key, "x"),
    "zset": lambda r, key: r.zadd(key, {"x": 1}),
    "stream": lambda r, key: r.xadd(key, {"x": "1"}),
}
SYMBOL = {kind: f"W{kind.replace('_', '').upper()[:7]}USDT" for kind in (*KINDS, "global")}
GOOD = "GOODUSDT"


def entries(r: redis.Redis, stream: str) -> list[Entry]:
    """A stream read raw, each entry decoded (bad bytes escaped), as the services read."""
    return shown(r.execute_command("XRANGE", stream, "-", "+", NEVER_DECODE=True))


def proposal(symbol: str, tranche: int) -> dict[str, str]:
    return {
        "schema": "1",
        "proposal_id": f"d{tranche}",
        "symbol": symbol,
        "action": ACTION,
        "kill_score": "0.9",
        "position_epoch": "0",
        "tranche": str(tranche),
        "ts_epoch": f"{time.time():.6f}",
        "source": "drill",
        "new_sl": "",
        "r_net": "",
    }


def plan(symbol: str, tranche: int) -> dict[str, str]:
    now = time.time()
    return {
        "plan_id": make_plan_id(symbol, "FULL_CLOSE_PROPOSED", 0, tranche),
        "schema": "1",
        "symbol": symbol,
        "action": "FULL_CLOSE_PROPOSED",
        "decision": "EXECUTE",
        "reason_codes": "plan_ok",
        "kill_score": "0.9",
        "close_fraction": "1",
        "new_sl": "",
        "mode": "testnet",
        "source": "drill",
        "steps": '[{"step":"CLOSE_FULL","type":"market_reduce_only","fraction":"1"}]',
        "proposal_id": "d",
        "proposal_ts": f"{now:.6f}",
        "created_at": f"{now:.6f}",
        "expires_at": f"{now + 30:.6f}",
    }


def result(symbol: str, n: int) -> dict[str, str]:
    return {
        "plan_id": make_plan_id(symbol, "X", 0, n),
        "schema": "1",
        "symbol": symbol,
        "executed": "true",
        "status": "filled",
        "reason": "filled",
        "order_id": "1",
        "client_order_id": "pc-x",
        "side": "SELL",
        "requested_qty": "0.01",
        "filled_qty": "0.01",
        "avg_price": "100",
        "reduce_only": "true",
        "error": "",
        "ts": f"{time.time():.6f}",
    }


def poisoned(fields: dict[str, str]) -> list[list[bytes]]:
    """One entry per field whose value is not UTF-8, and one whose first field name is not."""
    out = []
    for bad in fields:
        out.append(
            [
                x
                for f, v in fields.items()
                for x in (f.encode(), v.encode() + b"\xff" if f == bad else v.encode())
            ]
        )
    first = next(iter(fields))
    out.append(
        [
            x
            for f, v in fields.items()
            for x in (f.encode() + b"\xfe" if f == first else f.encode(), v.encode())
        ]
    )
    return out


class Pending:
    """XPENDING of every group the services read with, sampled while the drill runs."""

    def __init__(self, r: redis.Redis, k: Keys) -> None:
        self.r = r
        self.groups = [
            (k.proposal_stream, GROUP_PLANNER),
            (k.plan_stream, GROUP_GOVERNOR),
            (k.plan_stream, GROUP_P33),
            (k.plan_stream, GROUP_EXECUTOR),
            (k.result_stream, GROUP_P33_LEDGER),
            (k.result_stream, GROUP_GOVERNOR_RESULTS),
        ]
        self.max_idle_ms = 0

    def sample(self) -> tuple[int, int]:
        """(entries pending now, of them idle over STUCK_MS); the longest idle is kept."""
        pending = stuck = 0
        for stream, group in self.groups:
            rows = self.r.xpending_range(stream, group, min="-", max="+", count=1000)
            for row in rows:
                idle = int(row["time_since_delivered"])
                self.max_idle_ms = max(self.max_idle_ms, idle)
                stuck += idle > STUCK_MS
            pending += len(rows)
        return pending, stuck

    def settle(self, k: Keys, timeout_s: float = 30.0) -> tuple[int, int]:
        """Until every group has read and acknowledged everything; sampling as it goes."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = self.sample()
            state = settle(self.r, k, timeout_s=0)
            if (
                now[0] == 0 and all(v == (0, 0) for v in state.values())
            ) or time.monotonic() > deadline:
                return now
            time.sleep(0.1)


def results_of(r: redis.Redis, k: Keys, plan_ids: set[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {p: [] for p in plan_ids}
    for _i, f in entries(r, k.result_stream):
        if f.get("plan_id") in out:
            out[f["plan_id"]].append(f)
    return out


def wait_results(
    r: redis.Redis, k: Keys, plan_ids: set[str], timeout_s: float = 30.0
) -> dict[str, list[dict[str, str]]]:
    """Until every plan of ``plan_ids`` has a result (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = results_of(r, k, plan_ids)
        if all(got.values()) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def wait_hash(r: redis.Redis, key: str, timeout_s: float = 10.0) -> bool:
    """Until ``key`` is a hash (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while r.type(key) != "hash":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def running(chain_factory: Callable[..., Chain], r: redis.Redis) -> Chain:
    chain = chain_factory(
        APPLY_PERMIT_WAIT_MS="300",
        ALLOW_LIST_SYMBOLS=",".join([*SYMBOL.values(), GOOD]),
        TESTNET_AUTO_APPROVE="false",
        MAX_EXEC_PER_5MIN="1000",
        MAX_EXEC_PER_HOUR="1000",
        COOLDOWN_S="0",
        PLANNER_SWEEP_S="0.5",
        POLL_INTERVAL_S="0.5",
    )
    # real positions: any order that got through would fill and show
    seed_positions(r, chain.keys, [*SYMBOL.values(), GOOD], amt="1")
    chain.start()
    chain.wait_ready()
    return chain


def feed_bytes(r: redis.Redis, k: Keys, tried: Counter[str]) -> int:
    """Entries that are not UTF-8 on every stream the services read; returns the dead
    letters they must cost (one per consumer group; permit events: none)."""
    sym, expected = SYMBOL["global"], 0
    for stream, fields, groups in (
        (k.proposal_stream, proposal(sym, 900), 1),
        (k.plan_stream, plan(sym, 900), 3),  # governor, p33, executor
        (k.result_stream, result(sym, 900), 2),  # p33-ledger, governor-results
        (k.permit_event_stream, {"plan_id": plan(sym, 900)["plan_id"], "layer": "governor"}, 0),
    ):
        for args in poisoned(fields):
            r.execute_command("XADD", stream, "*", *args)
            tried[f"bytes:{stream.rsplit(':', 1)[-1]}"] += 1
            expected += groups
    return expected


def feed_types(
    r: redis.Redis, k: Keys, pending: Pending, tried: Counter[str]
) -> tuple[dict[str, tuple[str, str]], int]:
    """Rounds of wrong-type keys, a plan on each kind's symbol where one reads the key;
    returns the plans sent (plan id -> (kind, type)) and how many snapshot keys of another
    type P3.3 replaced."""
    sent: dict[str, tuple[str, str]] = {}
    replaced = 0
    for rnd, held in enumerate(sorted(WRITE), start=1):
        keys_set = []
        for kind, (contract, key_of, plans) in KINDS.items():
            if held == contract:
                continue
            pid = make_plan_id(SYMBOL[kind], ACTION, 0, rnd)
            key = key_of(k, SYMBOL[kind], pid)
            r.delete(key)
            WRITE[held](r, key)
            keys_set.append(key)
            tried[f"type:{kind}"] += 1
            if plans:
                sent[pid] = (kind, held)
                r.xadd(k.proposal_stream, proposal(SYMBOL[kind], rnd))
        wait_results(r, k, {pid for pid, (kind, _h) in sent.items() if kind != "dedupe"})
        pending.settle(k)
        if held != "hash":  # P3.3's next poll replaces the snapshot key
            replaced += wait_hash(r, k.snapshot(SYMBOL["snapshot"]))
        r.delete(*keys_set)
    for n, (kind, (contract, key_of)) in enumerate(GLOBAL.items(), start=1):
        for held in sorted(set(WRITE) - {contract}):
            tranche = 100 * n + len(sent)
            pid = make_plan_id(SYMBOL["global"], ACTION, 0, tranche)
            WRITE[held](r, key_of(k))
            tried[f"type:{kind}"] += 1
            sent[pid] = (kind, held)
            r.xadd(k.proposal_stream, proposal(SYMBOL["global"], tranche))
            wait_results(r, k, {pid})
            r.delete(key_of(k))
    return sent, replaced


#: The result each kind's plan must end with: (status, reason, the deny's own reason).
OUTCOME = {
    "ledger": ("blocked", "p33_denied", "wrong_key_type"),
    "inflight": ("blocked", "p33_denied", "wrong_key_type"),
    "exec": ("blocked", "wrong_key_type", None),
    "gov_permit": ("blocked", "permit_invalid", None),
    "p33_permit": ("blocked", "permit_invalid", None),
    "executions": ("blocked", "governor_denied", "wrong_key_type"),
    "reservations": ("blocked", "governor_denied", "wrong_key_type"),
    "notional": ("blocked", "governor_denied", "wrong_key_type"),
    "trading_state": ("blocked", "governor_denied", "trading_halted"),
    "exec_open": ("blocked", "wrong_key_type", None),
}


def test_bad_bytes_and_wrong_types_cost_dead_letters_never_a_stuck_chain(
    running: Chain, r: redis.Redis
) -> None:
    k = running.keys
    pending = Pending(r, k)
    tried: Counter[str] = Counter()

    expected_not_utf8 = feed_bytes(r, k, tried)
    assert pending.settle(k) == (0, 0)
    not_utf8 = [f for _i, f in entries(r, k.deadletter) if f["error"].startswith("not_utf8")]
    assert len(not_utf8) == expected_not_utf8
    assert all("\\xff" in f["fields"] or "\\xfe" in f["fields"] for f in not_utf8)

    sent, replaced = feed_types(r, k, pending, tried)
    left, stuck = pending.settle(k)
    orders_during = r.xlen(k.sim_fills)
    got = results_of(r, k, set(sent))
    outcomes = Counter(
        f"{sent[pid][0]}:{res[0]['status']}:{res[0]['reason']}" if res else f"{sent[pid][0]}:-"
        for pid, res in got.items()
    )

    good = make_plan_id(GOOD, ACTION, 0, 1)  # afterwards: a valid proposal is filled
    r.xadd(k.proposal_stream, proposal(GOOD, 1))
    filled = wait_results(r, k, {good})[good]
    alive = {n: p.poll() is None for n, p in running.procs.items()}
    dead = Counter(
        f"{f['service']}:{f['error'].split(':', 1)[0]}" for _i, f in entries(r, k.deadletter)
    )
    print(
        f"\nbad bytes and types: {sum(tried.values())} inputs tried "
        f"({dict(sorted(tried.items()))}); dead letters {dict(dead)}; entries pending after "
        f"{left}, consumers stuck with an entry pending over {STUCK_MS // 1000} s {stuck} "
        f"(longest pending idle seen {pending.max_idle_ms} ms); orders during the bad input "
        f"{orders_during}; services alive {alive}; snapshot keys replaced {replaced}; plans' "
        f"outcomes {dict(sorted(outcomes.items()))}; valid proposal afterwards: "
        f"{[(f['status'], f['reason']) for f in filled]}"
    )
    assert all(alive.values()), alive
    assert (left, stuck) == (0, 0) and pending.max_idle_ms < STUCK_MS
    assert orders_during == 0
    for pid, (kind, held) in sent.items():
        res = got[pid]
        if kind == "dedupe":  # never published: no plan, no result; one named dead letter
            assert res == [], (kind, held, res)
            named = f"{k.dedupe(pid)} is a {held}, expected a string"
            assert any(named in f["error"] for _i, f in entries(r, k.deadletter)), named
            continue
        status, reason, why = OUTCOME[kind]
        assert [(x["status"], x["reason"]) for x in res] == [(status, reason)], (kind, held, res)
        assert why is None or res[0]["error"] == why, (kind, held, res)
    assert replaced == len(WRITE) - 1  # each snapshot key of another type, by P3.3's poll
    assert [(f["status"], f["executed"]) for f in filled] == [("filled", "true")]
    assert Decimal(r.hget(k.sim_position(GOOD), "amt") or "0") < 1
