"""The ops commands beside bad data: a key of the wrong Redis type is a ``status`` problem
naming the key and both types (never a traceback), and a stream entry whose bytes are not
UTF-8 is shown escaped by ``plans``, ``explain`` and ``status`` (never a failed command).
The CLI runs as a subprocess, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.ops.health import gather
from tests.apply_layer.bench import plan_for


def cli(redis_url: str, keys: Keys, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "KEY_PREFIX": keys.prefix}
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_reports_a_ledger_of_the_wrong_type(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    r.set(keys.ledger("ETHUSDT"), "banana")
    line = f"position-brain: key {keys.ledger('ETHUSDT')} is a string, expected a hash"
    out = cli(redis_url, keys, "status")
    assert out.returncode == 1, out.stdout + out.stderr  # unhealthy, not a Redis fault (2)
    assert "Traceback" not in out.stderr and out.stderr == "", out.stderr
    assert line in " ".join(out.stdout.split())  # rich may wrap the line
    out = cli(redis_url, keys, "status", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    assert line in json.loads(out.stdout)["problems"]


def test_status_names_every_wrong_type_and_still_gathers_the_rest(
    r: redis.Redis, keys: Keys, settings: Settings, arun: Callable[..., Any]
) -> None:
    r.hset(keys.heartbeat("governor"), "ts", "1")
    r.set(keys.plan_stream, "x")
    r.lpush(keys.decisions, "x")
    r.sadd(keys.snapshot("BTCUSDT"), "x")
    r.zadd(keys.trading_state, {"HALTED": 1})
    r.hset(keys.ledger("SOLUSDT"), mapping={"last_known_amt": "1", "epoch": "0"})
    r.hset(
        keys.snapshot("SOLUSDT"),
        mapping={
            "position_amt": "1",
            "step_size": "0.001",
            "min_qty": "0.001",
            "ts_epoch": f"{time.time()}",
        },
    )
    h = arun(lambda ar: gather(ar, keys, settings))
    problems = {str(p) for p in h.problems}
    for want in (
        f"governor: key {keys.heartbeat('governor')} is a hash, expected a string",
        f"redis: key {keys.plan_stream} is a string, expected a stream",
        f"redis: key {keys.decisions} is a list, expected a stream",
        f"position-brain: key {keys.snapshot('BTCUSDT')} is a set, expected a hash",
        f"operator: key {keys.trading_state} is a zset, expected a string",
    ):
        assert want in problems, problems
    assert h.trading_state == "HALTED"  # unreadable: as the governor reads it
    assert {p["symbol"]: p["verdict"] for p in h.positions}["SOLUSDT"] == "ok"


def test_entries_that_are_not_utf8_are_shown_escaped(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    plan = plan_for(51)
    r.xadd(keys.plan_stream, plan.to_fields())
    r.execute_command(
        "XADD",
        keys.plan_stream,
        "*",
        "plan_id",
        b"0123456789abcdef",
        "symbol",
        b"BTC\xffUSDT",
        "decision",
        "EXECUTE",
    )
    r.execute_command(
        "XADD",
        keys.decisions,
        "*",
        "plan_id",
        plan.plan_id,
        "layer",
        "governor",
        "decision",
        b"GR\xfeANT",
        "reason",
        "x",
        "ts",
        "1",
    )
    r.execute_command("XADD", keys.deadletter, "*", "service", "governor", "error", b"\xff")
    out = cli(redis_url, keys, "plans", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {p["plan_id"]: p for p in json.loads(out.stdout)}
    assert rows["0123456789abcdef"]["symbol"] == "BTC\\xffUSDT"
    assert plan.plan_id in rows
    out = cli(redis_url, keys, "explain", plan.plan_id, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "GR\\xfeANT" in [s["decision"] for s in json.loads(out.stdout)["steps"]]
    out = cli(redis_url, keys, "status", "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert json.loads(out.stdout)["deadletters"]["last"]["error"] == "\\xff"


def test_other_commands_name_a_key_of_the_wrong_type_in_one_line(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    """``propose`` (the ledger's epoch), ``permits`` and ``explain`` (permits, the exec
    record): one line naming the key, exit 2, never a traceback."""
    pid = "0123456789abcdef"
    r.set(keys.ledger("ETHUSDT"), "banana")
    r.hset(keys.permit_governor(pid), "x", "1")
    r.rpush(keys.exec_record(pid), "x")
    for args, key, want in (
        (
            ("propose", "ETHUSDT", "--action", "PARTIAL_50", "--kill-score", "0.7"),
            keys.ledger("ETHUSDT"),
            "a string, expected a hash",
        ),
        (("permits", pid), keys.permit_governor(pid), "a hash, expected a string"),
        (("explain", pid), keys.exec_record(pid), "a list, expected a hash"),
    ):
        out = cli(redis_url, keys, *args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "Traceback" not in out.stderr, out.stderr
        line = " ".join(out.stderr.split())
        assert f"error: wrong_key_type: key {key} is {want}" in line, line
