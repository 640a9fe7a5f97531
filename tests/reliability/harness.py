"""Load and invariants for the reliability suites (crash, outage).

``Load`` submits proposals through the real planner path at a steady rate, each a distinct
decision. ``check_invariants`` reads Redis and the simulated exchange afterwards and returns
every violation of the chain's promises (an empty list is a pass).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys

TERMINAL = {"filled", "rejected", "blocked", "dry_run", "unknown"}


def seed_positions(r: redis.Redis, k: Keys, symbols: list[str], amt: str = "1000") -> None:
    for s in symbols:
        r.hset(
            k.sim_filters(s),
            mapping={
                "step_size": "0.001",
                "min_qty": "0.001",
                "max_qty": "100000",
                "min_notional": "0",
            },
        )
        r.sadd(k.sim_symbols, s)
        r.hset(k.sim_position(s), mapping={"amt": amt, "entry_price": "100", "mark_price": "101"})
        r.hset(
            k.ledger(s), mapping={"last_known_amt": amt, "last_known_side": "LONG", "epoch": "0"}
        )


class Load(threading.Thread):
    """Proposals at ``rate`` per second until stopped; survives Redis being away."""

    def __init__(self, url: str, k: Keys, symbols: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.k, self.symbols, self.rate = url, k, symbols, rate
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.sent = 0
        self.failed = 0

    def run(self) -> None:
        r = redis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1
        )
        n = 0
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.01)
                continue
            n += 1
            sym = self.symbols[n % len(self.symbols)]
            fields = {
                "schema": "1",
                "proposal_id": uuid.uuid4().hex[:12],
                "symbol": sym,
                "action": "PARTIAL_25",
                "kill_score": "0.9",
                "position_epoch": "0",
                "tranche": str(n),
                "ts_epoch": f"{time.time():.6f}",
                "source": "load",
                "new_sl": "",
                "r_net": "",
            }
            try:
                r.xadd(self.k.proposal_stream, fields)
                self.sent += 1
            except redis.exceptions.RedisError:
                self.failed += 1
            time.sleep(1 / self.rate)
        r.close()


def entries(r: redis.Redis, streams: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """Every entry of every shard of a sharded stream (``k.plan_streams`` …)."""
    return [e for s in streams for e in r.xrange(s)]


def settle(r: redis.Redis, k: Keys, timeout_s: float = 60.0) -> dict[str, Any]:
    """Until every consumer group has read and acknowledged everything (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = {}
        for s in (k.proposal_stream, *k.plan_streams, *k.result_streams):  # every shard
            if r.exists(s):
                for g in r.xinfo_groups(s):
                    name = s.removeprefix(f"{k.prefix}:stream:")
                    state[f"{name}/{g['name']}"] = (g.get("lag"), g["pending"])
        if all(v == (0, 0) for v in state.values()) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def check_invariants(
    r: redis.Redis, k: Keys, symbols: list[str]
) -> tuple[list[str], dict[str, Any]]:
    violations: list[str] = []
    plans = {
        f["plan_id"]: f for _i, f in entries(r, k.plan_streams) if f.get("decision") == "EXECUTE"
    }
    results: dict[str, list[dict[str, str]]] = {}
    for _i, f in entries(r, k.result_streams):
        results.setdefault(f.get("plan_id", ""), []).append(f)
    for stream in k.result_streams:  # each result in its symbol's shard
        for _i, f in r.xrange(stream):
            if k.result_stream_for(f.get("symbol", "")) != stream:
                violations.append(f"{f.get('plan_id')}: result of {f.get('symbol')} in {stream}")
    fills = [f for _i, f in r.xrange(k.sim_fills)]
    audit: dict[str, set[str]] = {}
    for _i, f in r.xrange(k.decisions):
        if f.get("layer") in ("governor", "position-brain"):
            audit.setdefault(f["plan_id"], set()).add(f"{f['layer']}:{f['decision']}")
    # no plan executed twice; no order above the position; no order without two allows
    per_coid = Counter(f["client_order_id"] for f in fills)
    for coid, n in per_coid.items():
        if n > 1:
            violations.append(f"{coid}: {n} fills")
    for f in fills:
        if Decimal(f["qty"]) > abs(Decimal(f["position_before"])):
            violations.append(
                f"{f['client_order_id']}: qty {f['qty']} > position {f['position_before']}"
            )
        pid = f["client_order_id"].removeprefix("pc-")
        need = {"governor:GRANT", "position-brain:ALLOW"}
        if not need <= audit.get(pid, set()):
            violations.append(f"{pid}: order without both allows ({sorted(audit.get(pid, set()))})")
    # every plan reached a terminal decision, with exactly one result
    for pid in plans:
        state = r.hget(k.exec_record(pid), "state")
        res = results.get(pid, [])
        if state not in TERMINAL:
            violations.append(f"{pid}: exec state {state}")
        if len(res) != 1:
            violations.append(f"{pid}: {len(res)} results")
        executed = [x for x in res if x.get("executed") == "true"]
        if len(executed) > 1:
            violations.append(f"{pid}: executed {len(executed)} times")
    # the ledger equals the exchange
    for s in symbols:
        ex, led = r.hget(k.sim_position(s), "amt"), r.hget(k.ledger(s), "last_known_amt")
        if ex is None or led is None or Decimal(ex) != Decimal(led):
            violations.append(f"{s}: ledger {led} != exchange {ex}")
    figures = {
        "plans": len(plans),
        "results": sum(len(v) for v in results.values()),
        "executions": len(fills),
        "blocked": dict(
            Counter(
                x.get("reason", "")
                for v in results.values()
                for x in v
                if x.get("status") == "blocked"
            )
        ),
    }
    return violations, figures


def open_plans(r: redis.Redis, k: Keys) -> int:
    """Plans with an order out (exec state submitted or unknown) that have no result yet."""
    from permitchain.apply_layer.exec_store import open_index

    return int(r.zcard(open_index(k)))


def wait_resolved(r: redis.Redis, k: Keys, timeout_s: float = 30.0) -> int:
    """Until the executor's resolver has finished every open plan (or the timeout); returns
    how many are still open."""
    deadline = time.monotonic() + timeout_s
    while (n := open_plans(r, k)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


def wait_fills(r: redis.Redis, k: Keys, above: int, timeout_s: float = 30.0) -> bool:
    """Until the simulated exchange has more than ``above`` fills (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while r.xlen(k.sim_fills) <= above:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def gatekeeper_denies(r: redis.Redis, k: Keys) -> dict[str, int]:
    """Deny reasons of the two gatekeepers from the audit stream, as ``layer:reason``."""
    return dict(
        Counter(
            f"{f['layer']}:{f.get('reason', '')}"
            for _i, f in r.xrange(k.decisions)
            if f.get("layer") in ("governor", "position-brain") and f.get("decision") == "DENY"
        )
    )


def started_chain(
    chain_factory: Callable[..., Chain], r: redis.Redis, symbols: list[str], **env: str
) -> Chain:
    """A chain for load tests: allowlisted, seeded symbols; no cooldown (load gets through);
    fast polls; plans expire after 10 s. Started and ready."""
    chain = chain_factory(
        **{
            "ALLOW_LIST_SYMBOLS": ",".join(symbols),
            "COOLDOWN_S": "0",
            "POLL_INTERVAL_S": "0.5",
            "PLAN_MAX_AGE_S": "10",
            **env,
        }
    )
    seed_positions(r, chain.keys, symbols)
    chain.start()
    chain.wait_ready()
    # Started means P3.3 has seen the exchange: every symbol has its first snapshot (a fault
    # switched on before the first poll would leave no snapshot at all, not a stale one).
    deadline = time.monotonic() + 30
    while not all(r.exists(chain.keys.snapshot(s)) for s in symbols):
        if time.monotonic() > deadline:
            raise TimeoutError("no first snapshot for every symbol")
        time.sleep(0.02)
    return chain
