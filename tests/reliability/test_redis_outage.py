"""Redis outage under load: stop the server for 10 s and start it again.

The services must keep running (no exit, no crash loop), retry with backoff, execute nothing
while blind, and recover by themselves; what was in flight resolves (invariants hold).
The server persists (append-only, fsync always), as a production server would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from permitchain.chain import Chain
from permitchain.embedded import EmbeddedServer
from tests.reliability.harness import Load, check_invariants, seed_positions, settle

pytestmark = pytest.mark.slow
OUTAGE_S = 10.0


def test_redis_outage_recovers(tmp_path: Path, prefix: str) -> None:
    server = EmbeddedServer(prefer_path=True, persist=True).start()
    symbols = [f"OUT{i}USDT" for i in range(6)]
    env = {
        "KEY_PREFIX": prefix,
        "APPLY_MODE": "testnet",
        "EXCHANGE": "sim",
        "METRICS_PORT": "0",
        "POLL_INTERVAL_S": "0.5",
        "COOLDOWN_S": "0",
        "PLAN_MAX_AGE_S": "10",
        "ALLOW_LIST_SYMBOLS": ",".join(symbols),
    }
    chain = Chain(env, redis_url=server.url, log_dir=tmp_path / "logs")
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        seed_positions(r, chain.keys, symbols)
        chain.start()
        chain.wait_ready()
        load = Load(server.url, chain.keys, symbols, rate=20)
        load.start()
        time.sleep(2.0)  # steady state under load before the outage
        fills_before = r.xlen(chain.keys.sim_fills)
        load.paused.set()
        server.stop()
        down_at = time.time()
        time.sleep(OUTAGE_S)  # the outage itself: its length is the point of the test
        alive_during = {n: p.poll() is None for n, p in chain.procs.items()}
        server.start()
        up_at = time.time()
        load.paused.clear()
        # load continues until the chain executes again (bounded), then stops
        deadline = time.monotonic() + 45
        while r.xlen(chain.keys.sim_fills) <= fills_before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        load.stop.set()
        load.join()
        chain.wait_ready(timeout_s=30)  # heartbeats came back by themselves
        groups = settle(r, chain.keys, timeout_s=90)
        violations, figures = check_invariants(r, chain.keys, symbols)
        fills = [f for _i, f in r.xrange(chain.keys.sim_fills)]
        blind = [f for f in fills if down_at < float(f["ts"]) < up_at]
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
        print(
            f"\nredis outage {OUTAGE_S:.0f}s: proposals {load.sent} ({load.failed} refused "
            f"while down); fills before {fills_before}, after {len(fills)}; {figures}; "
            f"violations {len(violations)}"
        )
        assert all(alive_during.values()), alive_during
        assert all(p.poll() is None for p in chain.procs.values())
        assert blind == []
        assert "retrying in" in logs  # backoff, visibly
        assert all(v == (0, 0) for v in groups.values()), groups
        assert violations == [], violations[:20]
        assert len(fills) > fills_before  # it works again after the outage
    finally:
        chain.stop()
        r.close()
        server.cleanup()
