"""The console as a process beside the running chain: a proposal's outcome (``?wait``), the
live events (every decision, resumable with Last-Event-ID), notifications to a local JSON
webhook, and the latency from a result on the stream to its event at an SSE client."""

from __future__ import annotations

import json
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.api import build_proposal, submit_proposal
from permitchain.store import async_client
from tests.console.conftest import Live, SSEReader

pytestmark = pytest.mark.slow


def set_position(live: Live, symbol: str, amt: str) -> None:
    import asyncio

    async def body() -> None:
        r = async_client(live.chain.redis_url)
        try:
            sim = SimExchange(r, live.chain.keys)
            await sim.list_symbol(symbol)
            await sim.set_position(symbol, Decimal(amt), Decimal(100))
        finally:
            await r.aclose()

    asyncio.run(body())


def wait_snapshot(live: Live, symbol: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        rows = live.get("/api/positions").json()["positions"]
        if any(p["symbol"] == symbol and p["exchange_amt"] not in (None, "0") for p in rows):
            return
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def test_a_proposal_waited_for_reaches_filled(live_factory: Callable[..., Live]) -> None:
    live = live_factory()
    set_position(live, "BTCUSDT", "0.062")
    wait_snapshot(live, "BTCUSDT")
    res = live.post(
        "/api/proposals?wait=20",
        {"symbol": "BTCUSDT", "action": "PARTIAL_50", "kill_score": "0.7", "tranche": 1},
    )
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["outcome"] == "filled", out
    layers = [s["layer"] for s in out["explain"]["steps"]]
    assert layers[0] == "planner" and layers.index("consume") < layers.index("executor")
    assert {"planner", "governor", "position-brain", "consume", "executor"} <= set(layers)
    # The same plan again is a duplicate, told as such.
    again = live.post(
        "/api/proposals?wait=20",
        {"symbol": "BTCUSDT", "action": "PARTIAL_50", "kill_score": "0.7", "tranche": 1},
    )
    assert again.json()["outcome"] in ("DUPLICATE", "SKIP"), again.json()


def test_events_every_decision_resumable_with_last_event_id(
    live_factory: Callable[..., Live], sse: Callable[..., SSEReader]
) -> None:
    live = live_factory()
    set_position(live, "BTCUSDT", "0.062")
    wait_snapshot(live, "BTCUSDT")
    reader = sse(live.url)
    plan = live.post("/api/proposals", {"symbol": "BTCUSDT", "action": "PARTIAL_25", "tranche": 2})
    plan_id = plan.json()["plan_id"]
    got = reader.until(lambda e: e.type == "result" and e.data["plan_id"] == plan_id)
    mine = [e for e in got if e.data["plan_id"] == plan_id]
    assert mine[0].data["layer"] == "planner"
    assert {e.data["layer"] for e in mine} >= {"planner", "governor", "position-brain", "executor"}
    assert mine[-1].data["context"]["result"]["status"] == "filled"
    halted = live.post("/api/trading-state/halt", {"reason": "drill"})
    assert halted.status_code == 200
    state = reader.until(lambda e: e.type == "trading_state")[-1]
    assert state.data["context"]["after"] == "HALTED" and state.data["reason"] == "drill"

    # Resume after the first event: exactly the entries after it, as the audit stream has them.
    first = got[0].id
    again = sse(live.url, last_event_id=first)
    resumed = again.until(lambda e: e.id == state.id)
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    ids = [i for i, _f in r.xrange(live.chain.keys.decisions, f"({first}", state.id)]
    r.close()
    assert [e.id for e in resumed] == ids


class Webhook:
    """A JSON webhook receiver on 127.0.0.1 (what apprise's json:// posts to)."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.gate = threading.Event()
        self.gate.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.gate.wait(30)
                outer.received.put(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def until(
        self, cond: Callable[[dict[str, Any]], bool], timeout_s: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = self.received.get(timeout=left)
            except queue.Empty:
                break
            seen.append(m)
            if cond(m):
                return m
        raise AssertionError(f"no such notification; got {seen}")

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.close()


def test_notifications_reach_a_json_webhook_and_never_hold_up_events(
    live_factory: Callable[..., Live], sse: Callable[..., SSEReader], webhook: Webhook
) -> None:
    live = live_factory(
        services=(),
        NOTIFY_URLS=f"json://127.0.0.1:{webhook.port}/hook",
        NOTIFY_HEALTH_EVERY_S="0.5",
        NOTIFY_DENIAL_BURST="3",
    )
    # Nothing but the console runs: status is unhealthy, and says which check fails.
    m = webhook.until(lambda m: "UNHEALTHY" in m["title"])
    assert "down (no heartbeat)" in m["message"]
    # A notifier that hangs (the receiver holds its answer) delays no event.
    webhook.gate.clear()
    reader = sse(live.url)
    res = live.post("/api/trading-state/halt", {"reason": "notifier drill"})
    assert res.status_code == 200
    ev = reader.until(lambda e: e.type == "trading_state")[-1]
    assert ev.data["reason"] == "notifier drill"
    assert not webhook.gate.is_set()  # the event came while the notifier was stuck
    webhook.gate.set()
    m = webhook.until(lambda m: "HALTED" in m["title"])
    assert "notifier drill" in m["message"] and "alice" in m["message"]
    # Dead letters, and a burst of denials of one reason: one message each.
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    k: Keys = live.chain.keys
    r.xadd(k.deadletter, {"service": "governor", "stream": k.plan_stream, "error": "bad plan"})
    for i in range(5):
        r.xadd(
            k.decisions,
            {
                "plan_id": f"p{i}",
                "symbol": "BTCUSDT",
                "layer": "governor",
                "decision": "DENY",
                "reason": "rate_limit_5min",
                "context": "{}",
                "ts": f"{time.time():.6f}",
            },
        )
    r.close()
    m = webhook.until(lambda m: "dead letter" in m["title"])
    assert "governor" in m["message"] and "bad plan" in m["message"]
    m = webhook.until(lambda m: "denials" in m["title"])
    assert "rate_limit_5min" in m["message"]


def test_latency_result_on_the_stream_to_sse_client_at_100_plans_per_s(
    live_factory: Callable[..., Live], sse: Callable[..., SSEReader]
) -> None:
    """Measured, printed (-s), not asserted: a result written to the result stream (with its
    audit entry, in the executor's one script) → its event read by an SSE client."""
    live = live_factory(
        MAX_EXEC_PER_HOUR="100000", MAX_EXEC_PER_5MIN="100000", COOLDOWN_S="0", APPLY_MODE="dry_run"
    )
    set_position(live, "BTCUSDT", "1000")
    wait_snapshot(live, "BTCUSDT")
    reader = sse(live.url, compact=True)
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    k: Keys = live.chain.keys
    n, rate = 1000, 100.0
    import asyncio

    async def produce() -> list[str]:
        ar = async_client(live.chain.redis_url)
        ids = []
        start = time.monotonic()
        try:
            for i in range(n):
                p = build_proposal("BTCUSDT", "PARTIAL_25", kill_score="0.7", tranche=10_000 + i)
                await submit_proposal(ar, k, p, ttl_s=60)
                ids.append(p.proposal_id)
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        finally:
            await ar.aclose()
        return ids

    asyncio.run(produce())
    results: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(results) < n and time.monotonic() < deadline:
        try:
            e = reader.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if e.type == "result":
            results[e.data["plan_id"]] = e.received
    stream = r.xrange(k.result_stream)
    r.close()
    at = {f["plan_id"]: int(i.split("-")[0]) / 1000 for i, f in stream}
    lat = sorted((results[p] - at[p]) * 1000 for p in results if p in at)
    assert len(lat) >= n * 0.95, f"{len(lat)} of {n} results seen"
    q = statistics.quantiles(lat, n=100)
    print(
        f"\nconsole SSE latency, result stream → SSE client, {len(lat)} results at "
        f"{rate:g} plans/s: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {lat[-1]:.1f} ms"
    )


def test_stopping_the_console_changes_nothing_for_trading(
    live_factory: Callable[..., Live],
) -> None:
    live = live_factory()
    set_position(live, "BTCUSDT", "0.062")
    wait_snapshot(live, "BTCUSDT")
    assert live.chain.stop_service("console") == 0  # SIGTERM: a clean exit
    k: Keys = live.chain.keys
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    assert r.get(k.heartbeat("console")) is None
    tail = r.xrevrange(k.result_stream, count=1)
    last = tail[0][0] if tail else "0-0"
    p = build_proposal("BTCUSDT", "PARTIAL_50", kill_score="0.7", tranche=5)
    r.hset(k.proposal(p.symbol), mapping=p.to_fields())
    r.xadd(k.proposal_stream, p.to_fields())
    got = r.xread({k.result_stream: last}, block=20_000, count=1)
    r.close()
    assert got, "no result without the console"
    assert got[0][1][0][1]["status"] == "filled"
