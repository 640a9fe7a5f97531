"""A local Redis Cluster of three masters for the cluster tests, started once per session.

Each node is an :class:`EmbeddedServer` (the suite's own server helper) in cluster mode; the
fixture assigns the slots (0-5460, 5461-10922, 10923-16383), joins the nodes with
``CLUSTER MEET`` and waits, bounded, for ``cluster_state:ok`` on every node. Skipped, with
the reason, only where no server binary exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from permitchain.contract.errors import ConfigError
from permitchain.embedded import EmbeddedServer, find_server_binary, free_port
from permitchain.store import sync_client

SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


class LocalCluster:
    def __init__(self) -> None:
        self.nodes: list[EmbeddedServer] = []
        self.bus_ports: list[int] = []

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        for _ in SLOT_RANGES:
            node, bus = EmbeddedServer(prefer_path=True), free_port()
            self.bus_ports.append(bus)
            # the bus port on its own free port (default port+10000 may be taken or > 65535)
            node.extra_args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{node.port}.conf",
                "--cluster-port",
                str(bus),
                "--cluster-node-timeout",
                "5000",
            ]
            self.nodes.append(node.start())
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]
        try:
            for c, (lo, hi) in zip(clients, SLOT_RANGES, strict=True):
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for c in clients[1:]:
                c.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0]
                )
            deadline = time.monotonic() + timeout_s
            while not all(_state_ok(c) for c in clients):
                if time.monotonic() > deadline:
                    raise TimeoutError("the local cluster never reached cluster_state:ok")
                time.sleep(0.1)
        finally:
            for c in clients:
                c.close()
        return self

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_clients(self) -> list[redis.Redis]:
        return [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]

    def keys_per_node(self, pattern: str) -> list[int]:
        """How many keys matching ``pattern`` each master holds (SCAN on each node)."""
        out = []
        for c in self.node_clients():
            out.append(sum(1 for _ in c.scan_iter(match=pattern, count=1000)))
            c.close()
        return out

    def cleanup(self) -> None:
        for n in self.nodes:
            n.cleanup()


def _state_ok(c: redis.Redis) -> bool:
    info = c.execute_command("CLUSTER", "INFO")
    text = info if isinstance(info, str) else str(info)
    return "cluster_state:ok" in text and "cluster_known_nodes:3" in text


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    try:
        find_server_binary(prefer_path=True)
    except ConfigError as e:
        pytest.skip(f"no redis-server/valkey-server binary to start a cluster: {e}")
    c = LocalCluster()
    try:
        yield c.start()
    finally:
        c.cleanup()


@pytest.fixture(scope="session")
def redis_url(cluster: LocalCluster) -> str:
    """The suite's ``redis_url``, here the cluster's: ``settings``, ``arun`` and
    ``chain_factory`` (tests/conftest.py) then run everything against the cluster."""
    return cluster.url


@pytest.fixture
def r(redis_url: str) -> Iterator[Any]:
    """The suite's sync client fixture, as a cluster client."""
    client = sync_client(redis_url)
    yield client
    client.close()
