"""TLS: the whole chain over rediss:// (services as separate processes).

Skipped with a reason where openssl is missing or the server binary was built without TLS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from permitchain.chain import Chain
from permitchain.contract.errors import ConfigError
from permitchain.embedded import EmbeddedServer
from permitchain.scenario import run_reference

pytestmark = pytest.mark.slow


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=permitchain-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    )
    return d / "server.crt", d / "server.key", d / "ca.crt"


def test_reference_scenario_over_tls(tmp_path: Path, prefix: str) -> None:
    certs = make_certs(tmp_path)
    try:
        server = EmbeddedServer(prefer_path=True, tls=certs).start()
    except ConfigError as e:
        pytest.skip(f"server binary without TLS support: {e}")
    assert server.url.startswith("rediss://")
    env = {
        "KEY_PREFIX": prefix,
        "APPLY_MODE": "testnet",
        "EXCHANGE": "sim",
        "METRICS_PORT": "0",
        "POLL_INTERVAL_S": "1",
        "SIM_DRIVE_PRICES": "false",
    }
    chain = Chain(env, redis_url=server.url, log_dir=tmp_path / "logs")

    try:
        assert run_reference(chain, server.url, emit=lambda n, d: None).ok()
    finally:
        chain.stop()
        server.cleanup()
