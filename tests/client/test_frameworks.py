"""The framework adapters with the real frameworks, each in its own virtual environment
(they pin their own ccxt and engines): Freqtrade backtesting and a NautilusTrader backtest
on ../shared/data/klines/, their exits through the gate of a running chain.

Skipped unless the environments exist: ``tools/frameworks/setup.sh`` makes them and prints
the variables to set (PERMITCHAIN_FREQTRADE_PYTHON, PERMITCHAIN_NAUTILUS_PYTHON). Offline
once installed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from permitchain.chain import Chain
from permitchain.exchange.sim import SimExchange
from permitchain.store import async_client

from .conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.frameworks]
TOOLS = ROOT / "tools" / "frameworks"


def framework_python(var: str) -> Path:
    path = os.environ.get(var)
    if not path:
        pytest.skip(f"{var} not set (tools/frameworks/setup.sh)")
    return Path(path)


def start_chain(
    chain_factory: Callable[..., Chain], redis_url: str, symbol: str, step: str
) -> Chain:
    chain = chain_factory(
        ALLOW_LIST_SYMBOLS=symbol, MAX_EXEC_PER_5MIN="50", MAX_EXEC_PER_HOUR="50", COOLDOWN_S="0"
    )

    async def list_symbol() -> None:
        r = async_client(redis_url)
        try:
            await SimExchange(r, chain.keys).list_symbol(
                symbol, step_size=step, min_qty=step, min_notional="0"
            )
        finally:
            await r.aclose()

    asyncio.run(list_symbol())
    names = ("apply-layer", "governor", "position-brain")
    chain.start(names)
    chain.wait_ready(names)
    return chain


def run_tool(
    python: Path, script: str, chain: Chain, redis_url: str, out: Path, timeout_s: int = 600
) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [
            str(python),
            str(TOOLS / script),
            "--redis-url",
            redis_url,
            "--key-prefix",
            chain.keys.prefix,
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def results_by_plan(r: redis.Redis, chain: Chain) -> dict[str, dict[str, str]]:
    return {f["plan_id"]: f for _i, f in r.xrange(chain.keys.result_stream)}


def test_freqtrade_backtest_exits_only_through_the_gate(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    python = framework_python("PERMITCHAIN_FREQTRADE_PYTHON")
    chain = start_chain(chain_factory, redis_url, "UNITTESTBTC", "0.001")
    events = run_tool(python, "freqtrade_backtest.py", chain, redis_url, tmp_path / "ev.jsonl")
    for e in events:
        print(e)
    for _i, f in r.xrange(chain.keys.decisions):
        if f["decision"] in ("DENY", "SKIP", "BLOCKED"):
            print("decision", f["layer"], f["decision"], f["reason"], f["context"][:300])
    entry = next(e for e in events if e["kind"] == "entry")
    exits = [e for e in events if e["kind"] == "exit"]
    log = next(e for e in reversed(events) if e["kind"] == "log")["entries"]
    refused = [e for e in log if e["event"] == "refused"]
    allowed = [e for e in log if e["event"] == "allowed"]
    results = results_by_plan(r, chain)
    # denied exits did not happen: the skipped partial (0.3) and the skipped full exit (0.2)
    assert [(e["action"], e["reason"]) for e in refused] == [
        ("PARTIAL_50", "below_kill_score_threshold"),
        ("FULL_CLOSE_PROPOSED", "below_kill_score_threshold"),
    ]
    assert [e["minute"] for e in exits] == [40, 60]
    # the allowed ones happened with the gate's quantity and client order id
    assert len(allowed) == 2 and len(exits) == 2
    half = f"{float(entry['amount']) / 2:.3f}"  # PARTIAL_50, rounded down to the step
    assert allowed[0]["qty"] == exits[0]["amount"].rstrip("0") == half.rstrip("0")
    assert exits[0]["tag"] == exits[0]["client_order_id"] == allowed[0]["tag"]
    assert exits[1]["client_order_id"] == allowed[1]["tag"]
    for gate_exit, exit_ in zip(allowed, exits, strict=True):
        assert exit_["exchange_status"] == "FILLED"
        result = results[gate_exit["plan_id"]]
        assert result["status"] == "filled"
        assert result["client_order_id"] == gate_exit["tag"] == f"pc-{gate_exit['plan_id']}"
        assert float(result["filled_qty"]) == float(exit_["amount"])
    # P3.3's ledger followed the reports to a flat position
    assert r.hget(chain.keys.ledger("UNITTESTBTC"), "last_known_amt") == "0"


def test_nautilus_backtest_holds_exits_until_the_gate_approves(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    python = framework_python("PERMITCHAIN_NAUTILUS_PYTHON")
    chain = start_chain(chain_factory, redis_url, "ETHBTC", "0.001")
    events = run_tool(python, "nautilus_backtest.py", chain, redis_url, tmp_path / "ev.jsonl")
    for e in events:
        print(e)
    log = next(e for e in events if e["kind"] == "log")
    decisions = log["decisions"]
    refused = [d for d in decisions if d["event"] == "refused"]
    allowed = [d for d in decisions if d["event"] == "allowed"]
    exits = [e for e in events if e["kind"] == "exit"]
    results = results_by_plan(r, chain)
    # the skipped exit was held and never sent
    assert [d["reason"] for d in refused] == ["blocked:below_kill_score_threshold"]
    held = next(o for o in log["nautilus_orders"] if o["id"] == refused[0]["primary"])
    assert held["status"] == "INITIALIZED" and Decimal(held["filled"]) == 0
    # allowed: sent with the gate's quantity (the third asked 0.5 and got 0.25)
    half, quarter = Decimal("0.5"), Decimal("0.25")
    asked_granted = [(Decimal(d["asked"]), Decimal(d["qty"])) for d in allowed]
    assert asked_granted == [(half, half), (half, quarter), (quarter, quarter)]
    assert [Decimal(e["qty"]) for e in exits] == [half, quarter, quarter]
    orders = {o["id"]: o for o in log["nautilus_orders"]}
    for d, e in zip(allowed, exits, strict=True):
        spawned = orders[d["spawned"]]
        assert spawned["reduce_only"] and spawned["status"] == "FILLED"
        assert f"pc:client_order_id={d['client_order_id']}" in spawned["tags"]
        assert e["client_order_id"] == d["client_order_id"] == f"pc-{d['plan_id']}"
        assert results[d["plan_id"]]["status"] == "filled"
    assert [Decimal(q) for q in log["nautilus_position"]] == [0]
    assert r.hget(chain.keys.ledger("ETHBTC"), "last_known_amt") == "0"
