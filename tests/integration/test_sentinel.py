"""REDIS_URL=redis+sentinel://… follows the master through a failover (real processes)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from permitchain.embedded import EmbeddedServer, find_server_binary, free_port
from permitchain.store import async_client, sync_client

pytestmark = pytest.mark.slow


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    master = EmbeddedServer(prefer_path=True).start()
    replica = EmbeddedServer(
        prefer_path=True, extra_args=["--replicaof", "127.0.0.1", str(master.port)]
    ).start()
    sport = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sport}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor pc 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds pc 1000\nsentinel failover-timeout pc 5000\n"
    )
    proc = subprocess.Popen(
        [find_server_binary(prefer_path=True), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(sport)
        yield f"redis+sentinel://127.0.0.1:{sport}/pc/0", master.port, replica.port
    finally:
        proc.terminate()
        proc.wait(10)
        replica.cleanup()
        master.cleanup()


def test_sentinel_url_follows_failover(sentinel_setup: tuple[str, int, int]) -> None:
    url, master_port, replica_port = sentinel_setup
    s = redis.Redis(port=int(url.split(":")[2].split("/")[0]), decode_responses=True)
    # wait until the sentinel knows the replica, then fail over on purpose
    deadline = time.monotonic() + 15
    while not s.execute_command("SENTINEL", "REPLICAS", "pc") and time.monotonic() < deadline:
        time.sleep(0.1)
    client = sync_client(url)
    assert client.set("k", "before")
    # the sentinel needs a fresh INFO from the replica before it will promote it
    deadline = time.monotonic() + 30
    while True:
        try:
            s.execute_command("SENTINEL", "FAILOVER", "pc")
            break
        except redis.exceptions.ResponseError as e:
            if "NOGOODSLAVE" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    # until the failover is complete: the sentinel's master record moved, the old master demoted
    old = redis.Redis(port=master_port, decode_responses=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rec = s.sentinel_master("pc")
        if int(rec["port"]) == replica_port and old.info("replication")["role"] == "slave":
            break
        time.sleep(0.1)
    assert int(s.sentinel_master("pc")["port"]) == replica_port
    old.close()

    async def write_after_failover() -> str:
        ac = async_client(url)
        try:
            for _ in range(100):
                try:
                    await ac.set("k", "after")
                    return str(await ac.get("k"))
                except (redis.exceptions.ConnectionError, redis.exceptions.ReadOnlyError):
                    await asyncio.sleep(0.1)
            raise AssertionError("never reached the new master")
        finally:
            await ac.aclose()

    assert asyncio.run(write_after_failover()) == "after"
    promoted = redis.Redis(port=replica_port, decode_responses=True)
    assert promoted.get("k") == "after"
    assert promoted.info("replication")["role"] == "master"
    s.close()
    client.close()
    promoted.close()
