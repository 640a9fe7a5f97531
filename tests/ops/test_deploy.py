"""Deployment files: alerts and dashboard use only metrics the services export; promtool
checks and unit-tests the alerts (skipped when promtool is not installed); the systemd units
run `permitchain run <service>` with restart on failure and settings from /etc/permitchain."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import permitchain.services  # noqa: F401 - registers every service's metrics
from permitchain.services import SERVICE_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROM = DEPLOY / "prometheus"
METRIC = re.compile(r"\b((?:permitchain|apply|governor|p33)_[a-z0-9_]+)")
UNITS = {
    "exit-brain": "quantum-exit-monitor",
    "apply-layer": "quantum-apply-layer",
    "governor": "quantum-governor",
    "position-brain": "quantum-position-state-brain",
}


def exported() -> set[str]:
    names: set[str] = set()
    for fam in REGISTRY.collect():
        names.add(fam.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names |= {fam.name + s for s in suffixes.get(fam.type, ())}
    return names


def used(text: str) -> set[str]:
    return set(METRIC.findall(text))


def test_alerts_and_dashboard_use_exported_metrics() -> None:
    alerts = (PROM / "alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "permitchain.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    assert used(alerts) and used(exprs)
    assert used(alerts) - exported() == set()
    assert used(exprs) - exported() == set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
)
def test_promtool(args: list[str]) -> None:
    out = subprocess.run(
        ["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_runbooks_exist() -> None:
    ops = (DEPLOY.parent / "docs" / "operations.md").read_text()
    anchors = set(
        re.findall(r"docs/operations\.md#([a-z0-9-]+)", (PROM / "alerts.yml").read_text())
    )
    headings = {h.strip().lower().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", ops, re.M)}
    assert anchors and anchors - headings == set()


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_systemd_unit(service: str) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd" / f"{UNITS[service]}.service").read_text())
    svc = unit["Service"]
    assert svc["ExecStart"].split()[1:3] == ["run", service]
    assert svc["Restart"] == "on-failure"
    assert "EnvironmentFile" not in svc  # lenient: the env files go to permitchain instead
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
