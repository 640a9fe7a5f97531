"""The inspection commands on a real server with the chain running (separate processes):
``explain`` tells the reference scenario's two plans; ``plans``/``permits`` list them;
``status`` and ``proof`` (with the canary) pass on a healthy chain and fail, naming the layer,
when the position brain is stopped. The CLI runs as a subprocess, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.reasons import QTY_MISMATCH
from permitchain.scenario import SYMBOL, run_reference, seed
from permitchain.store import async_client

pytestmark = pytest.mark.slow


def cli(chain: Chain, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env=chain.child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_json(chain: Chain, *args: str, rc: int = 0) -> Any:
    out = cli(chain, *args, "--json")
    assert out.returncode == rc, out.stdout + out.stderr
    return json.loads(out.stdout)


def wait_for(cond: Callable[[], object], timeout_s: float = 15.0) -> None:
    """Poll a condition (not a fixed sleep): returns as soon as it holds."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def story(expl: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["layer"], s["decision"], s["reason"]) for s in expl["steps"]]


def detail(expl: dict[str, Any], layer: str) -> str:
    return str(next(s["detail"] for s in expl["steps"] if s["layer"] == layer))


def start(chain: Chain, redis_url: str, *, scenario: bool) -> dict[str, Any]:
    """The reference position on the simulated exchange, the chain up, and (optionally) the
    reference scenario run through it. Returns the scenario's steps."""
    steps: dict[str, Any] = {}
    if scenario:
        run_reference(chain, redis_url, emit=lambda n, d: steps.update({n: d}))
        return steps

    async def body() -> None:
        ar = async_client(redis_url)
        try:
            await seed(ar, chain.keys, ledger=False)
            await asyncio.to_thread(chain.start)
            await asyncio.to_thread(chain.wait_ready)
        finally:
            await ar.aclose()

    asyncio.run(body())
    return steps


def test_explain_tells_the_reference_scenario(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    chain = chain_factory(LOG_FORMAT="json")
    steps = start(chain, redis_url, scenario=True)
    plan1, plan2 = steps["proposal"]["plan_id"], steps["proposal_second"]["plan_id"]

    e1 = cli_json(chain, "explain", plan1)
    s1 = story(e1)
    assert s1[0] == ("planner", "EXECUTE", "plan_ok")
    gov_grant = ("governor", "GRANT", "testnet_auto_approve")
    assert set(s1[1:3]) == {gov_grant, ("position-brain", "DENY", QTY_MISMATCH)}
    assert s1[3:] == [("consume", "BLOCKED", "p33_denied"), ("executor", "BLOCKED", "p33_denied")]
    assert "diff=0.06" in detail(e1, "position-brain")
    assert "tolerance=0.001" in detail(e1, "position-brain")
    assert e1["outcome"] == "blocked" and e1["result"]["executed"] == "false"
    assert e1["proposal"]["action"] == "PARTIAL_75" and e1["plan"]["symbol"] == SYMBOL

    e2 = cli_json(chain, "explain", plan2)
    s2 = story(e2)
    assert s2[0] == ("planner", "EXECUTE", "plan_ok")
    assert set(s2[1:3]) == {gov_grant, ("position-brain", "ALLOW", "ok")}
    # ... and the fill reaches P3.3's ledger, once (the scenario waited for ledger 0.016)
    assert s2[3:] == [
        ("consume", "CONSUMED", "ok"),
        ("executor", "EXECUTED", "ok"),
        ("position-brain", "LEDGER_APPLY", "applied"),
    ]
    assert "safe_close_qty=0.046" in detail(e2, "position-brain")
    ex = detail(e2, "executor")
    assert "status=filled" in ex and "filled_qty=0.046" in ex and "reduce_only=true" in ex
    assert e2["outcome"] == "filled"

    check_listings(chain, r, plan1, plan2, s1)
    check_json_logs(tmp_path / "logs", plan1, plan2)


def check_listings(
    chain: Chain, r: redis.Redis, plan1: str, plan2: str, s1: list[tuple[str, str, str]]
) -> None:
    live = cli_json(chain, "permits", plan1)  # a blocked plan's permits stay until their TTL
    assert [(p["layer"], p["decision"]) for p in live] == [
        ("governor", "GRANT"),
        ("position-brain", "DENY"),
    ]
    assert all(p["present"] and 0 < p["ttl_s"] <= 60 for p in live)
    assert {p["plan_id"] for p in cli_json(chain, "permits")} == {plan1}
    # long after the permits are gone, the story stays: delete them as expiry would
    r.delete(chain.keys.permit_governor(plan1), chain.keys.permit_p33(plan1))
    assert story(cli_json(chain, "explain", plan1)) == s1
    text = cli(chain, "explain", plan1)
    assert text.returncode == 0
    assert QTY_MISMATCH in text.stdout and "p33_denied" in text.stdout
    assert cli(chain, "explain", "0123456789abcdef").returncode == 1

    plans = cli_json(chain, "plans", "--symbol", SYMBOL)
    assert [(p["plan_id"], p["state"]) for p in plans] == [(plan2, "filled"), (plan1, "blocked")]
    assert [p["plan_id"] for p in cli_json(chain, "plans", "--decision", "blocked")] == [plan1]

    consumed = cli_json(chain, "permits", plan2)
    assert [p["present"] for p in consumed] == [False, False]
    assert all(p["note"].startswith("consumed at") for p in consumed)
    assert cli(chain, "permits").returncode == 0


def check_json_logs(log_dir: Path, plan1: str, plan2: str) -> None:
    """LOG_FORMAT=json: one JSON object per line, one line per decision with its fields."""
    decisions = []
    for path in log_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            obj = json.loads(line)
            if obj.get("msg", "").startswith("[DECISION]"):
                decisions.append(obj)
    mine = {(d["layer"], d["decision"], d["reason"]) for d in decisions if d["plan_id"] == plan1}
    assert ("position-brain", "DENY", QTY_MISMATCH) in mine
    assert all(d["symbol"] == SYMBOL for d in decisions if d["plan_id"] in (plan1, plan2))


def test_status_and_proof_see_a_stopped_position_brain(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis
) -> None:
    chain = chain_factory()
    k = chain.keys
    start(chain, redis_url, scenario=False)
    wait_for(lambda: r.exists(k.snapshot(SYMBOL)) and r.exists(k.ledger(SYMBOL)))

    st = cli_json(chain, "status")
    assert st["healthy"] and all(v["up"] for v in st["services"].values())
    assert [p["verdict"] for p in st["positions"] if p["symbol"] == SYMBOL] == ["ok"]
    assert all(g["exists"] for g in st["groups"])
    assert cli(chain, "status").returncode == 0

    proof = cli_json(chain, "proof", "--canary")
    assert proof["passed"], proof
    by_name = {c["name"]: c for c in proof["checks"]}
    assert by_name["metrics governor"]["ok"] and by_name["snapshots fresh"]["ok"]
    for layer in ("planner", "governor", "position-brain", "executor", "ledger"):
        assert by_name[f"canary {layer}"]["ok"], by_name[f"canary {layer}"]
    assert "executed false" in by_name["canary executor"]["detail"]
    assert "GRANT canary_dry_run" in by_name["canary governor"]["detail"]
    assert "ALLOW ok" in by_name["canary position-brain"]["detail"]
    assert by_name["canary dry_run end to end"]["ok"] is True  # two allows, then dry_run
    assert r.xlen(k.sim_fills) == 0  # the canary moved nothing

    chain.stop_service("position-brain")
    down = cli_json(chain, "status", rc=1)
    assert down["services"]["position-brain"]["up"] is False
    assert "position-brain: down (no heartbeat)" in down["problems"]

    failed = cli_json(chain, "proof", "--canary", "--timeout", "3", rc=1)
    bad = {c["name"]: c for c in failed["checks"] if c["ok"] is False}
    assert bad["alive position-brain"]["layer"] == "position-brain"
    assert bad["canary position-brain"]["layer"] == "position-brain"
    assert "no P3.3 permit" in bad["canary position-brain"]["detail"]
    assert "canary governor" not in bad
    text = cli(chain, "proof", "--canary", "--timeout", "2")
    assert text.returncode == 1 and "position-brain" in text.stdout
