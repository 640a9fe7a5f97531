"""The canary's systemd units: a oneshot ``proof --canary`` and a timer running it every
minute (each run is a new plan, so a rerun within DEDUPE_TTL passes)."""

from __future__ import annotations

import configparser
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    u = configparser.ConfigParser(strict=False, interpolation=None)
    u.optionxform = str  # type: ignore[assignment,method-assign]
    u.read_string((SYSTEMD / name).read_text())
    return u


def test_canary_service_and_timer() -> None:
    svc = unit("quantum-canary.service")["Service"]
    assert svc["Type"] == "oneshot"
    assert svc["ExecStart"].endswith("permitchain proof --canary")
    assert svc["Environment"].startswith("PERMITCHAIN_ENV_FILE=/etc/permitchain/common.env:")
    timer = unit("quantum-canary.timer")
    assert timer["Timer"]["OnUnitActiveSec"] == "1min"
    assert timer["Install"]["WantedBy"] == "timers.target"
