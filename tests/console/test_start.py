"""Starting the console: refused without a token beyond loopback or with a weak token (exit 2,
naming the variable); its systemd unit runs it with the token as a credential."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.console.helpers import free_port

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "permitchain-console.service"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONSOLE_BIND": "0.0.0.0:{port}"}, "CONSOLE_BIND: 0.0.0.0 is not a loopback address"),
        ({"CONSOLE_TOKEN": "short"}, "CONSOLE_TOKEN: a token needs 16 characters"),
        ({"CONSOLE_BIND": "127.0.0.1:99999"}, "CONSOLE_BIND: port 99999 out of range"),
    ],
)
def test_start_refused_naming_the_variable(
    redis_url: str, prefix: str, env: dict[str, str], message: str
) -> None:
    port = free_port()
    child = {
        **os.environ,
        "REDIS_URL": redis_url,
        "KEY_PREFIX": prefix,
        "METRICS_PORT": "0",
        **{k: v.format(port=port) for k, v in env.items()},
    }
    if "CONSOLE_TOKEN" not in env:
        child.pop("CONSOLE_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-m", "permitchain", "run", "console"],
        env=child,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in " ".join(out.stderr.split())


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert "permitchain run console" in svc["ExecStart"]
    assert svc["ExecStart"].endswith("--env-file /etc/permitchain/console.env")
    assert svc["LoadCredential"] == "console_token:/etc/permitchain/console_token"
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
