"""`status`' gathering on a real server without services: each kind of trouble becomes a
problem naming its layer, and the canary's reserved symbol never shows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.ops.health import CANARY_SYMBOL, gather


def snapshot(r: redis.Redis, k: Keys, symbol: str, amt: str, age_s: float) -> None:
    r.hset(
        k.snapshot(symbol),
        mapping={
            "position_amt": amt,
            "step_size": "0.001",
            "min_qty": "0.001",
            "ts_epoch": f"{time.time() - age_s}",
        },
    )


def test_problems_name_their_layer(
    r: redis.Redis, keys: Keys, settings: Settings, arun: Callable[..., Any]
) -> None:
    snapshot(r, keys, "BTCUSDT", "0.062", age_s=1)
    r.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "0.002", "epoch": "0"})
    snapshot(r, keys, "ETHUSDT", "1", age_s=30)
    r.hset(keys.ledger("ETHUSDT"), mapping={"last_known_amt": "1", "epoch": "2"})
    r.hset(keys.ledger(CANARY_SYMBOL), mapping={"last_result_id": "1-0"})
    r.set(keys.heartbeat("governor"), json.dumps({"ts": time.time(), "version": "0.1.0"}))
    r.xadd(keys.deadletter, {"source": keys.plan_stream, "service": "governor", "error": "x"})
    r.set(keys.trading_state, "HALTED")

    h = arun(lambda ar: gather(ar, keys, settings))
    problems = {str(p) for p in h.problems}
    assert "position-brain: down (no heartbeat)" in problems
    assert "governor: down (no heartbeat)" not in problems
    assert any(
        p.startswith("position-brain: BTCUSDT: reconcile_required_qty_mismatch") for p in problems
    )
    assert any(p.startswith("position-brain: ETHUSDT: snapshot stale") for p in problems)
    assert any(p.startswith("governor: 1 dead letter") for p in problems)
    assert any(
        p.startswith("governor: consumer group governor on plan_stream missing") for p in problems
    )
    rows = {p["symbol"]: p for p in h.positions}
    assert rows["BTCUSDT"]["diff"] == "0.06" and rows["BTCUSDT"]["tolerance"] == "0.001"
    assert rows["ETHUSDT"]["verdict"] == "ok" and CANARY_SYMBOL not in rows
    assert h.trading_state == "HALTED" and "operator: trading state HALTED" in map(str, h.warnings)
    assert not h.healthy and h.to_dict()["healthy"] is False
