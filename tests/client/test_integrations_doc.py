"""docs/integrations.md's recipes, run as written: the client and gate recipes with the
client installed alone in a clean virtual environment, against the running chain; the exit
brain recipe's commands against the chain with its exit brain (the test's chain stands in
for `permitchain up`)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from permitchain.chain import Chain

from .conftest import ROOT, SYMBOL, Running

pytestmark = pytest.mark.slow
DOC = ROOT / "docs" / "integrations.md"


def recipe(name: str) -> str:
    """The fenced code block of docs/integrations.md that starts with ``# recipe: <name>``."""
    blocks = re.findall(r"```(?:python|bash)\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if b.startswith(f"# recipe: {name}\n")]
    assert len(found) == 1, f"docs/integrations.md: one recipe {name!r} expected"
    return found[0]


def run_recipe(name: str, python: Path, run: Running, tmp_path: Path) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(recipe(name))
    env = {
        **os.environ,
        "REDIS_URL": run.url,
        "KEY_PREFIX": run.keys.prefix,
        # `permitchain` (the simulated exchange's CLI) from the project's environment
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    env.pop("PYTHONPATH", None)  # the clean venv's own packages only
    out = subprocess.run(
        [str(python), str(script)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    print(f"\n--- recipe {name} ---\n{out.stdout}")
    return out.stdout


def test_client_recipe(
    start_chain: Callable[..., Running], clean_venv: Path, tmp_path: Path
) -> None:
    out = run_recipe("client", clean_venv, start_chain(), tmp_path)
    assert re.search(r"^result filled ok 0\.031 pc-[0-9a-f]{16}$", out, re.M)
    assert "audit executor EXECUTED ok" in out and "trading ACTIVE" in out


def test_gate_recipe(
    start_chain: Callable[..., Running], clean_venv: Path, tmp_path: Path, r: redis.Redis
) -> None:
    run = start_chain()
    out = run_recipe("gate", clean_venv, run, tmp_path)
    assert re.search(r"^claimed SELL 0\.015 pc-[0-9a-f]{16}$", out, re.M)
    assert "reported True filled" in out and "result filled" in out
    assert "again already_executed" in out
    assert r.xlen(run.keys.sim_fills) == 1


def test_exit_brain_recipe(chain_factory: Callable[..., Chain], r: redis.Redis) -> None:
    chain = chain_factory(ALLOW_LIST_SYMBOLS=SYMBOL, EXIT_INTERVAL_S="0.2", EXIT_BAR_S="1")
    chain.start()  # what `EXIT_BAR_S=1 permitchain up &` starts
    chain.wait_ready()
    lines = [ln.split("#")[0].strip() for ln in recipe("exit-brain").splitlines()]
    commands = [shlex.split(ln) for ln in lines if ln and not ln.endswith("&")]
    assert [c[:3] for c in commands] == [
        ["permitchain", "sim", "set-position"],
        ["permitchain", "sim", "set-price"],
        ["permitchain", "plans", "--last"],
    ]
    for cmd in commands[:2]:
        subprocess.run(
            [sys.executable, "-m", "permitchain", *cmd[1:]],
            env=chain.child_env(),
            check=True,
            capture_output=True,
            timeout=60,
        )
    deadline, last = time.monotonic() + 60, "0-0"
    filled = None
    while filled is None and time.monotonic() < deadline:
        for _s, entries in r.xread({chain.keys.result_stream: last}, block=500) or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields["status"] == "filled":
                    filled = fields
    assert filled is not None, "the exit brain's plan never filled"
    plans = subprocess.run(
        [sys.executable, "-m", "permitchain", *commands[2][1:]],
        env={**chain.child_env(), "COLUMNS": "200"},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    print(f"\n--- permitchain plans ---\n{plans}")
    assert filled["plan_id"] in plans and "filled" in plans
