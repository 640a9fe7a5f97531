"""`permitchain halt/reduce/resume/status` against the real server, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import redis

from permitchain.cli.control import MAX_REASON_CHARS, NO_REASON, clean_reason
from permitchain.contract.keys import Keys


def cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "KEY_PREFIX": prefix, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def operator_entries(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [
        {**f, "context": json.loads(f["context"])}
        for _i, f in r.xrange(keys.decisions)
        if f["layer"] == "operator"
    ]


def status_state(redis_url: str, prefix: str) -> str:
    out = cli(redis_url, prefix, "status", "--json")
    assert out.returncode == 1, out.stderr  # no services run here: unhealthy, but it answers
    return str(json.loads(out.stdout)["trading_state"])


def test_halt_reduce_resume_are_audited_with_reason_and_operator(
    r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    assert status_state(redis_url, prefix) == "ACTIVE"  # absent means ACTIVE
    out = cli(redis_url, prefix, "halt", "--reason", "exchange incident [INC-42]")
    assert out.returncode == 0, out.stderr
    assert "ACTIVE → HALTED (exchange incident [INC-42])" in out.stdout
    assert r.get(keys.trading_state) == "HALTED"
    assert status_state(redis_url, prefix) == "HALTED"
    assert cli(redis_url, prefix, "reduce", "--reason", "winding down").returncode == 0
    assert cli(redis_url, prefix, "resume").returncode == 0
    assert r.get(keys.trading_state) == "ACTIVE"
    entries = operator_entries(r, keys)
    assert [
        (e["decision"], e["reason"], e["context"]["before"], e["context"]["after"]) for e in entries
    ] == [
        ("TRADING_HALTED", "exchange incident [INC-42]", "ACTIVE", "HALTED"),
        ("TRADING_REDUCING", "winding down", "HALTED", "REDUCING"),
        ("TRADING_ACTIVE", NO_REASON, "REDUCING", "ACTIVE"),
    ]
    assert all(e["context"]["operator"] for e in entries)
    assert all(e["plan_id"] == "" and float(e["ts"]) > 0 for e in entries)


def test_a_broken_state_key_reads_halted_and_resume_repairs_it(
    r: redis.Redis, keys: Keys, redis_url: str, prefix: str
) -> None:
    r.hset(keys.trading_state, mapping={"state": "ACTIVE"})  # WRONGTYPE for GET
    assert status_state(redis_url, prefix) == "HALTED"
    out = cli(redis_url, prefix, "resume", "--reason", "fixed the key")
    assert out.returncode == 0, out.stderr
    assert r.get(keys.trading_state) == "ACTIVE"
    (entry,) = operator_entries(r, keys)
    assert entry["context"]["before"] == "HALTED"
    assert entry["context"]["key_type_before"] == "hash"
    r.set(keys.trading_state, b"\xffHALTED")
    assert status_state(redis_url, prefix) == "HALTED"


def test_reasons_are_one_bounded_line() -> None:
    assert clean_reason("  a\nb\t c ") == "a b c"
    assert clean_reason("") == NO_REASON
    assert len(clean_reason("x" * 5000)) == MAX_REASON_CHARS
