"""The CLI as a user meets it: ``propose`` refuses what the planner would skip as malformed
(exit 2, one line, nothing sent), prints the plan id, has ``--json`` and ``--wait`` (exit 0
filled, 1 skipped/blocked, with the reason); ``sim set-position`` takes a negative amount;
``plans`` refuses a bogus ``--decision`` and a ``--last`` below 1; tables show ISO UTC times;
``--version``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from permitchain import __version__
from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.scenario import SYMBOL
from tests.lifecycle.helpers import cli, cli_env, error_lines
from tests.ops.test_commands import start, wait_for

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
EPOCH = re.compile(r"\b1\d{9}\.\d+")


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "run", REDIS_URL=redis_url, KEY_PREFIX=prefix, COLUMNS="250")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--action", "SELL_ALL"), "unknown 'SELL_ALL'"),
        (("--action", "UPDATE_SL"), "UPDATE_SL needs a positive stop price"),
    ],
)
def test_propose_refuses_what_the_planner_cannot_plan(
    env: dict[str, str], r: redis.Redis, keys: Keys, args: tuple[str, ...], needle: str
) -> None:
    out = cli(env, "propose", "BTCUSDT", *args)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert r.xlen(keys.proposal_stream) == 0 and not r.exists(keys.proposal("BTCUSDT"))


@pytest.mark.parametrize("args", [("--decision", "bogus"), ("--last", "-5"), ("--last", "0")])
def test_plans_refuses_bad_options(env: dict[str, str], args: tuple[str, ...]) -> None:
    out = cli(env, "plans", *args)
    assert out.returncode == 2 and args[0] in out.stderr, out.stderr


def test_version_and_a_negative_position(env: dict[str, str], r: redis.Redis, keys: Keys) -> None:
    out = cli(env, "--version")
    assert out.returncode == 0 and out.stdout.strip() == __version__
    out = cli(env, "sim", "set-position", "BTCUSDT", "-0.063")
    assert out.returncode == 0, out.stderr
    assert "position -0.063" in out.stdout
    assert "-0.063" in cli(env, "sim", "show", "BTCUSDT").stdout


@pytest.mark.slow
def test_propose_waits_for_the_outcome(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis, env: dict[str, str]
) -> None:
    chain = chain_factory(COOLDOWN_S="0")
    k = chain.keys
    start(chain, redis_url, scenario=False)
    wait_for(lambda: r.exists(k.snapshot(SYMBOL)) and r.exists(k.ledger(SYMBOL)))

    filled = cli(
        env, "propose", SYMBOL, "--action", "PARTIAL_50", "--kill-score", "0.7", "--wait", "30"
    )
    assert filled.returncode == 0, filled.stdout + filled.stderr
    assert "outcome: filled" in filled.stdout
    plan_id = re.search(r"→ plan ([0-9a-f]{16})", filled.stdout)
    assert plan_id is not None

    again = cli(
        env,
        "propose",
        SYMBOL,
        "--action",
        "PARTIAL_50",
        "--kill-score",
        "0.7",
        "--wait",
        "30",
        "--json",
    )
    assert again.returncode == 1, again.stdout + again.stderr
    doc = json.loads(again.stdout)
    assert doc["plan_id"] == plan_id.group(1) and doc["action"] == "PARTIAL_50"
    assert doc["outcome"]["decision"] == "DUPLICATE" and doc["outcome"]["ok"] is False

    low = cli(
        env,
        "propose",
        SYMBOL,
        "--action",
        "PARTIAL_25",
        "--kill-score",
        "0.1",
        "--tranche",
        "2",
        "--wait",
        "30",
    )
    assert low.returncode == 1 and "SKIP below_kill_score_threshold" in low.stdout, low.stdout

    assert cli(env, "halt", "--reason", "test").returncode == 0
    halted = cli(
        env,
        "propose",
        SYMBOL,
        "--action",
        "PARTIAL_25",
        "--kill-score",
        "0.7",
        "--tranche",
        "3",
        "--wait",
        "30",
    )
    assert halted.returncode == 1 and "outcome: blocked" in halted.stdout, halted.stdout
    assert "trading_halted" in halted.stdout

    for command in (
        ("plans", "--last", "5"),
        ("permits", plan_id.group(1)),
        ("explain", plan_id.group(1)),
        ("status",),
    ):
        table = cli(env, *command).stdout
        assert ISO.search(table) and not EPOCH.search(table), table
