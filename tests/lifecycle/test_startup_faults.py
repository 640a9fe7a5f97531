"""Every start-up fault is one line on stderr naming the setting or resource, exit 2, no
traceback: a metrics port in use, EXCHANGE=binance without keys (under ``run`` and ``up``),
a malformed REDIS_URL, a Redis that does not answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.embedded import EmbeddedServer, free_port
from tests.lifecycle.helpers import cli, cli_env, error_lines


def one_line(out: object, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)  # type: ignore[attr-defined]
    lines = error_lines(out.stderr)  # type: ignore[attr-defined]
    assert len(lines) == 1, out.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_metrics_port_in_use_names_the_port(redis_url: str, prefix: str, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = cli_env(
            tmp_path,
            REDIS_URL=redis_url,
            KEY_PREFIX=prefix,
            METRICS_PORT=str(port),
            LOG_LEVEL="WARNING",
        )
        one_line(cli(env, "run", "governor"), "METRICS_PORT", str(port))


@pytest.mark.parametrize("command", [("run", "apply-layer"), ("up",)], ids=["run", "up"])
def test_binance_without_keys(
    command: tuple[str, ...], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = cli_env(
        tmp_path, REDIS_URL=redis_url, KEY_PREFIX=prefix, EXCHANGE="binance", LOG_LEVEL="WARNING"
    )
    one_line(cli(env, *command, timeout_s=30), "BINANCE_API_KEY", "EXCHANGE=binance")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://127.0.0.1:notaport/0", "notaport"),
        ("rediss://127.0.0.1:6390/0?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs"),
    ],
    ids=["port", "ca-file"],
)
def test_malformed_redis_url(url: str, needle: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, REDIS_URL=url, LOG_LEVEL="WARNING")
    one_line(cli(env, "run", "governor", timeout_s=30), "REDIS_URL", needle)


def test_up_with_a_redis_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        env = cli_env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        one_line(cli(env, "up", timeout_s=30), "REDIS_URL", f"127.0.0.1:{port}")


@pytest.mark.parametrize("service", ["governor", "apply-layer"])
def test_wrong_redis_password(service: str, redis_url: str, prefix: str, tmp_path: Path) -> None:
    """The session's server has no password: AUTH fails, and waiting would not mend it."""
    url = redis_url.replace("redis://", "redis://:wrong@", 1)
    env = cli_env(tmp_path, REDIS_URL=url, KEY_PREFIX=prefix, METRICS_PORT="0", LOG_LEVEL="WARNING")
    out = cli(env, "run", service, timeout_s=30)
    one_line(out, "REDIS_URL: authentication failed")
    assert "wrong" not in out.stderr


def test_a_service_waits_for_a_redis_that_is_down_at_start(prefix: str, tmp_path: Path) -> None:
    """The apply layer reads Redis while it is built (recovery): a server not up yet is
    waited for there too, as every service waits for it, and the service then runs."""
    port = free_port()
    env = cli_env(
        tmp_path,
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        KEY_PREFIX=prefix,
        METRICS_PORT="0",
        LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "permitchain", "run", "apply-layer"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # blocks until the service reports the wait
        assert "redis not ready while starting" in first, first
        with EmbeddedServer(prefer_path=True, port=port) as server:
            r = redis.Redis.from_url(server.url)
            try:
                deadline = time.monotonic() + 30
                while not r.exists(Keys(prefix).heartbeat("apply-layer")):
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
            finally:
                r.close()
            proc.terminate()
            assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
