"""The atomic steps on a real Cluster: a cluster client gets the Cluster implementation, and
every step run on it (``tests/steps_scenario.py``) answers and writes what the single-server
implementation does on a single server, but for the two answers the topology changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from permitchain.contract.keys import Keys
from permitchain.embedded import EmbeddedServer
from permitchain.store import async_client
from permitchain.store.steps import ClusterSteps, ServerSteps, steps_for
from tests.steps_scenario import CLUSTER_ONLY, SERVER_ONLY, exercise


@pytest.fixture(scope="module")
def single_url() -> Iterator[str]:
    server = EmbeddedServer(prefer_path=True).start()
    try:
        yield server.url
    finally:
        server.cleanup()


def test_cluster_steps_write_what_the_scripts_write(
    arun: Any, prefix: str, single_url: str
) -> None:
    async def single() -> dict[str, Any]:
        r = async_client(single_url)
        try:
            steps = steps_for(r)
            assert isinstance(steps, ServerSteps)
            return await exercise(steps, Keys(prefix))
        finally:
            await r.aclose()

    async def body(r: Any) -> dict[str, Any]:
        steps = steps_for(r)
        assert isinstance(steps, ClusterSteps) and steps_for(r) is steps
        return await exercise(steps, Keys(prefix))

    cluster = arun(body)
    server = asyncio.run(single())
    for name, want in SERVER_ONLY.items():
        assert server.pop(name) == want, name
    for name, want in CLUSTER_ONLY.items():
        assert cluster.pop(name) == want, name
    assert cluster == server
    assert cluster["audit"] and cluster["results"] and cluster["read"]
