"""The lean transport over TLS (rediss://) against an embedded TLS server with throwaway
certificates: it answers as the pool does, a wrong CA or a wrong server name is a one-line
store fault naming REDIS_URL's host and the cause (never a hang), and `permitchain bench
--tls` runs the chain end to end over TLS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from permitchain.contract.errors import ConfigError, StoreError
from permitchain.embedded import EmbeddedServer, make_certs
from permitchain.store import async_client, atranslate, transport_name


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    certs = make_certs(tmp_path_factory.mktemp("tls"))
    try:
        server = EmbeddedServer(prefer_path=True, tls=certs).start()
    except ConfigError as e:
        pytest.skip(f"server binary without TLS support: {e}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.parametrize("transport", ["lean", "pool"])
def test_a_client_over_tls(tls_server: EmbeddedServer, prefix: str, transport: str) -> None:
    async def body() -> None:
        c = async_client(tls_server.url, transport=transport)
        try:
            assert transport_name(c) == f"{transport} over TLS"
            assert await c.set(f"{prefix}:k", "v") is True
            assert await c.get(f"{prefix}:k") == "v"
            await c.xadd(f"{prefix}:x", {"f": "1"})
            got = await c.xread({f"{prefix}:x": "0-0"}, block=100)  # a lane, over TLS too
            assert [f for _s, es in got for _i, f in es] == [{"f": "1"}]
            pipe = c.pipeline(transaction=False)
            pipe.get(f"{prefix}:k")
            pipe.xlen(f"{prefix}:x")
            assert await pipe.execute() == ["v", 1]
        finally:
            await c.aclose()

    asyncio.run(body())


def test_the_lean_client_shares_one_tls_context(tls_server: EmbeddedServer) -> None:
    async def body() -> None:
        c = async_client(tls_server.url)
        try:
            await c.xread({"nothing": "$"}, block=10)
            assert c.lean.tls is not None and [lane.tls for lane in c.lanes] == [c.lean.tls]
        finally:
            await c.aclose()

    asyncio.run(body())


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("wrong CA", "certificate verify failed|unable to get local issuer|self.signed"),
        ("wrong name", "mismatch|not valid for"),
    ],
)
def test_a_tls_failure_is_a_clear_store_fault(
    tls_server: EmbeddedServer, tmp_path: Path, case: str, cause: str
) -> None:
    wrong: EmbeddedServer | None = None
    if case == "wrong CA":  # a CA that did not sign the server's certificate
        other = make_certs(tmp_path)[2]
        port = tls_server.port
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={other}"
    else:  # a server whose certificate (from the right CA) names another host
        cert, key, ca = make_certs(tmp_path, names=("permitchain.invalid",))
        wrong = EmbeddedServer(prefer_path=True, tls=(cert, key, ca)).start()
        port = wrong.port
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"

    async def body() -> str:
        c = async_client(url)
        try:
            with pytest.raises(StoreError) as e:
                async with atranslate():
                    await asyncio.wait_for(c.get("k"), 30)  # not a hang: fails at connect
            return str(e.value)
        finally:
            await c.aclose()

    try:
        msg = asyncio.run(body())
    finally:
        if wrong is not None:
            wrong.cleanup()
    assert "\n" not in msg
    assert f"REDIS_URL 127.0.0.1:{port}: TLS handshake failed: " in msg
    assert re.search(cause, msg, flags=re.IGNORECASE), msg


@pytest.mark.slow
def test_bench_runs_over_tls(tls_server: EmbeddedServer) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "permitchain", "bench", "--quick", "--tls", "--json"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rediss://127.0.0.1:" in proc.stderr
    res = json.loads(proc.stdout)
    assert res["config"]["tls"] is True and res["config"]["transport"] == "lean"
    for phase in [*res["latency"].values(), res["throughput"]]:
        v = phase["verify"]
        assert v["plans"] > 0 and v["verified"] == v["plans"], v
        assert v["double_fills"] == 0 and v["failed"] == 0
        assert phase["cpu_ms_per_plan"]["apply-layer"] > 0
