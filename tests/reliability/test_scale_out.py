"""Two instances of every consuming service under load (docs/scaling.md).

A second governor, position brain and apply layer (planner + executor) run beside the first
ones, each as its own process "on another host": a ``sitecustomize`` on its PYTHONPATH makes
``socket.gethostname()`` answer ``scale2``, so its consumer names are ``scale2:<service>``
(the consumer name is host:service; two instances on one real host need distinct hostnames).
Both instances of each group must get entries, and the invariants must hold: no plan filled
twice, every plan terminal with exactly one result, nothing pending, ledger == exchange.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from permitchain.chain import Chain
from tests.reliability.harness import Load, check_invariants, settle, started_chain, wait_resolved

pytestmark = pytest.mark.slow

HOST2 = "scale2"
SCALED = ["governor", "position-brain", "apply-layer"]


@pytest.fixture
def second_host(tmp_path: Path) -> Iterator[Callable[[Chain, str], subprocess.Popen[bytes]]]:
    site = tmp_path / "host2"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import socket\nsocket.gethostname = lambda: {HOST2!r}\n"
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(chain: Chain, service: str) -> subprocess.Popen[bytes]:
        env = chain.child_env(service)
        env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
        log = open(tmp_path / f"{service}-{HOST2}.log", "ab")  # noqa: SIM115 - closed below
        p = subprocess.Popen(
            [sys.executable, "-m", "permitchain", "run", service],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_two_instances_of_each_service_share_the_work(
    chain_factory: Callable[..., Chain],
    second_host: Callable[[Chain, str], subprocess.Popen[bytes]],
    r: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    symbols = [f"SCALE{i}USDT" for i in range(8)]
    chain = started_chain(chain_factory, r, symbols)
    k = chain.keys
    seconds = {s: second_host(chain, s) for s in SCALED}
    # ready when the second instances have joined every group (a consumer named scale2:…).
    # The governor's result group exists only where it counts executions (not in testnet
    # auto-approve), so the groups are read from the server, the required ones checked.
    required = {"planner", "governor", "p33", "executor", "p33-ledger"}

    def consumers() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for stream in (k.proposal_stream, k.plan_stream, k.result_stream):
            for g in r.xinfo_groups(stream) if r.exists(stream) else []:
                out[g["name"]] = sorted(c["name"] for c in r.xinfo_consumers(stream, g["name"]))
        return out

    def joined() -> bool:
        c = consumers()
        return required <= set(c) and all(
            any(n.startswith(f"{HOST2}:") for n in members) for members in c.values()
        )

    deadline = time.monotonic() + 30
    while not joined() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert joined(), consumers()
    load = Load(redis_url, k, symbols, rate=20)
    load.start()
    try:
        time.sleep(4.0)  # steady load with both instances in every group; not a synchronisation
    finally:
        load.stop.set()
        load.join()
    still_open = wait_resolved(r, k, timeout_s=30)
    state = settle(r, k, timeout_s=60)
    violations, figures = check_invariants(r, k, symbols)
    per_group = consumers()
    alive = {
        **{n: p.poll() is None for n, p in chain.procs.items()},
        **{f"{n}@{HOST2}": p.poll() is None for n, p in seconds.items()},
    }
    # work per instance, from each process's own log: decisions, and the executor's permit waits
    log_files = {
        **{f"{n}@1": tmp_path / "logs" / f"{n}.log" for n in SCALED},
        **{f"{n}@{HOST2}": tmp_path / f"{n}-{HOST2}.log" for n in SCALED},
    }
    logs = {n: path.read_text() for n, path in log_files.items()}
    work = {n: text.count("[DECISION]") + text.count("[PERMIT_WAIT]") for n, text in logs.items()}
    print(
        f"\nscale-out (2 instances of {SCALED}): proposals {load.sent}; {figures}; "
        f"lines of work per instance {work}; violations {len(violations)}"
    )
    assert all(alive.values()), alive
    assert still_open == 0
    assert all(v == (0, 0) for v in state.values()), state
    assert violations == [], violations[:20]
    assert figures["executions"] > 0
    for group, members in per_group.items():
        assert len(members) == 2, (group, members)
    assert all(n > 0 for n in work.values()), work  # both instances of each service worked
