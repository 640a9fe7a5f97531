"""The atomic steps (``store/steps.py``): both implementations are the whole interface and
leave the same state behind; the client's steps are chosen once, by the client's class.

The Cluster implementation runs here on a single server too (its split steps are plain
commands there): the same run of every step (``tests/steps_scenario.py``) against each must
answer the same and write the same, but for the two answers the topology changes. The run
on a real Cluster is ``tests/cluster/test_steps_on_cluster.py``."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from permitchain.contract.keys import Keys
from permitchain.store import async_client
from permitchain.store.steps import AtomicSteps, ClusterSteps, ServerSteps, steps_for
from tests.steps_scenario import CLUSTER_ONLY, P1, SERVER_ONLY, exercise


def _steps() -> set[str]:
    return {n for n, f in inspect.getmembers(AtomicSteps) if inspect.iscoroutinefunction(f)}


@pytest.mark.parametrize("impl", [ServerSteps, ClusterSteps])
def test_each_implementation_is_the_whole_interface(impl: type[AtomicSteps]) -> None:
    assert issubclass(impl, AtomicSteps) and not inspect.isabstract(impl)
    assert AtomicSteps.__abstractmethods__ <= set(vars(impl))
    for name in _steps():  # the same signature as the interface's, parameter for parameter
        want = inspect.signature(getattr(AtomicSteps, name)).parameters
        got = inspect.signature(getattr(impl, name)).parameters
        assert list(got) == list(want), name
        assert [p.kind for p in got.values()] == [p.kind for p in want.values()], name
    assert {
        "publish_plan",
        "write_permit",
        "claim_and_write_permit",
        "consume_permits",
        "block_plan",
        "exec_move",
        "exec_submit",
        "flush_exec_outbox",
        "write_ledger",
        "release_claim",
        "snapshot_touch",
        "set_trading_state",
        "read_streams",
    } <= _steps()


def test_steps_are_chosen_once_per_client(arun: Any, redis_url: str) -> None:
    async def body(r: Any) -> None:
        steps = steps_for(r)
        assert isinstance(steps, ServerSteps) and steps_for(r) is steps and steps.redis is r
        other = async_client(redis_url)
        try:
            assert steps_for(other) is not steps
        finally:
            await other.aclose()

    arun(body)


def test_both_implementations_write_the_same(arun: Any, prefix: str) -> None:
    async def body(r: Any) -> list[dict[str, Any]]:
        return [
            await exercise(ServerSteps(r), Keys(prefix + "s")),
            await exercise(ClusterSteps(r), Keys(prefix + "c")),
        ]

    server, cluster = arun(body)
    for name, want in SERVER_ONLY.items():
        assert server.pop(name) == want, name
    for name, want in CLUSTER_ONLY.items():
        assert cluster.pop(name) == want, name
    assert server == cluster
    # and what they wrote is what the steps are for
    assert server["publish"] == (True, None, 1)
    assert server["write_permit"] == [True, False] and server["governor_permit"] == "g1"
    assert server["claim"] == [("allow", ""), ("held", P1)]
    assert server["submit"] == ("REDUCING", True, "submitted", True)
    assert server["move"] == (True, "filled") and server["move_again"] == (False, "filled")
    assert server["result_id"] and server["open"] == [] and not server["flush_none"]
    assert server["flush_left"] and server["flushed"] == (False, True, 0)
    assert server["ledger"] == ("1", P1, 1, "2") and server["ledger_fields"] == ["last_known_amt"]
    assert server["release"] == [False, True, False]
    assert server["touch"] == [1, 2] and server["touched"]["ts_epoch"] == "2.000000"
    assert server["trading_state"] == "HALTED"
    assert [a["decision"] for a in server["audit"]] == [
        "EXECUTE",
        "DUPLICATE",
        "GRANT",
        "DENY",
        "ALLOW",
        "EXECUTED",
        "LEDGER_APPLY",
        "HALT",
    ]
    assert server["read"] == [(":stream:apply.plan", 1), (":stream:apply.result", 2)]
