"""A variable close to a setting's name is refused, never silently ignored (issue 18, item 7)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import load_settings, misspelt
from permitchain.services import RUNNABLE

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        # the four names an operator set believing a limit was in force
        ("DRY_RUN", "APPLY_MODE=dry_run"),
        ("MAX_EXEC_HOUR", "MAX_EXEC_PER_HOUR"),
        ("POSITION_TOL", "POSITION_TOLERANCE"),
        ("ALLOW_LIST", "ALLOW_LIST_SYMBOLS"),
        # another case or separator
        ("max_exec_per_hour", "MAX_EXEC_PER_HOUR"),
        ("apply_mode", "APPLY_MODE"),
        ("Apply-Mode", "APPLY_MODE"),
        ("dry_run", "APPLY_MODE=dry_run"),
        # added pieces
        ("APPLY_DRY_RUN", "APPLY_MODE=dry_run"),
        ("PERMITCHAIN_APPLY_MODE", "APPLY_MODE"),
        ("COOLDOWN_SECONDS", "COOLDOWN_S"),
        # ordinary typos
        ("KILL_SCORE_TRESHOLD", "KILL_SCORE_THRESHOLD"),
        ("DEDUP_TTL", "DEDUPE_TTL"),
        ("COOLDOWN", "COOLDOWN_S"),
        ("EXCAHNGE", "EXCHANGE"),
        ("TESTNET", "APPLY_MODE=testnet"),
    ],
)
def test_a_name_close_to_a_setting_is_refused_with_what_was_meant(name: str, meant: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({name: "1"})
    assert f"{name}: not a setting; did you mean {meant}" in str(e.value)


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "HOME",
        "LANG",
        "PYTHONPATH",
        "CI",
        "TERM",
        "USER",
        "SHELL",
        "LC_ALL",
        "TZ",
        "VIRTUAL_ENV",
        "XDG_RUNTIME_DIR",
        "PYTEST_CURRENT_TEST",
        "HTTP_PROXY",
        "no_proxy",
        "CREDENTIALS_DIRECTORY",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "PORT",
        "DEBUG",
        "REDIS_HOST",
        "NPM_CONFIG_LOG_LEVEL",
        "PERMITCHAIN_ENV_FILE",
        "PERMITCHAIN_ACL_PASSWORD_GOVERNOR",
        "GITHUB_ACTIONS",
        "SSL_CERT_FILE",
    ],
)
def test_unrelated_variables_pass(name: str) -> None:
    assert misspelt({name: "x"}) == []


def test_this_process_environment_passes() -> None:
    assert misspelt(dict(os.environ)) == []


def test_every_close_name_is_named_in_one_message() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"DRY_RUN": "true", "MAX_EXEC_HOUR": "1", "HOME": "/root"})
    assert "DRY_RUN" in str(e.value) and "MAX_EXEC_HOUR" in str(e.value)
    assert "HOME" not in str(e.value)


def test_a_variable_of_another_tool_can_be_declared_unrelated() -> None:
    with pytest.raises(ConfigError, match="API_KEY"):
        load_settings({"API_KEY": "k"})
    s = load_settings({"API_KEY": "k", "PERMITCHAIN_IGNORE_ENV": "API_KEY, OTHER"})
    assert s.binance_api_key is None


def test_the_values_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"BINANCE_API_SECRETS": "s3cr3t-value"})
    assert "did you mean BINANCE_API_SECRET" in str(e.value)
    assert "s3cr3t-value" not in str(e.value)


def test_env_files_are_read_strictly_in_order(tmp_path: Path) -> None:
    common = tmp_path / "common.env"
    own = tmp_path / "governor.env"
    common.write_text("APPLY_MODE=testnet\nMAX_EXEC_PER_HOUR=5\n")
    own.write_text("# the governor's own\nMAX_EXEC_PER_HOUR=1\n")
    s = load_settings({}, env_file=[common, own])
    assert s.max_exec_per_hour == 1  # the later file wins
    joined = {"PERMITCHAIN_ENV_FILE": f"{common}{os.pathsep}{own}"}
    assert load_settings(joined).max_exec_per_hour == 1
    own.write_text("MAX_EXEC_HOUR=1\n")
    with pytest.raises(
        ConfigError,
        match=r"not a setting: MAX_EXEC_HOUR \(did you mean "
        r"MAX_EXEC_PER_HOUR\?\)",
    ):
        load_settings({}, env_file=[common, own])
    own.write_text("SOMETHING_ELSE=1\n")  # in a file, any name that is not a setting
    with pytest.raises(ConfigError, match="not a setting: SOMETHING_ELSE"):
        load_settings({}, env_file=[common, own])
    own.write_text("MAX_EXEC_PER_HOUR=1\nMAX_EXEC_PER_HOUR=9\n")
    with pytest.raises(ConfigError, match="MAX_EXEC_PER_HOUR is set twice"):
        load_settings({}, env_file=[common, own])
    with pytest.raises(ConfigError, match="no such file"):
        load_settings({}, env_file=[tmp_path / "missing.env"])


def _permitchain(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "COLUMNS")}
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_refuses_a_close_name_in_one_line_exit_2() -> None:
    out = _permitchain("run", "governor", env={"MAX_EXEC_HOUR": "1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "MAX_EXEC_HOUR: not a setting; did you mean MAX_EXEC_PER_HOUR?" in lines[0]


def test_run_reads_its_env_files_strictly(tmp_path: Path) -> None:
    common = tmp_path / "common.env"
    common.write_text("APPLY_MODE=testnet\n")
    own = tmp_path / "governor.env"
    own.write_text("POSITION_TOL=0.5\n")
    out = _permitchain("run", "governor", "--env-file", str(common), "--env-file", str(own), env={})
    assert out.returncode == 2
    assert re.search(
        r"governor\.env: not a setting: POSITION_TOL \(did you mean "
        r"POSITION_TOLERANCE\?\)",
        out.stderr,
    ), out.stderr


def test_the_units_pass_their_env_files_to_permitchain() -> None:
    """systemd's EnvironmentFile= passes misspelt names on silently: the units do not use it."""
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert len(units) == len(RUNNABLE) + 1  # the four chain services, the console, the canary
    for unit in units:
        text = unit.read_text().replace("\\\n", " ")
        directives = [line for line in text.splitlines() if not line.startswith("#")]
        assert not [d for d in directives if d.startswith("EnvironmentFile=")], unit.name
        service = re.search(r"permitchain run ([a-z-]+)", text)
        if service is None:  # the canary's oneshot: the same files, through the variable
            assert "PERMITCHAIN_ENV_FILE=/etc/permitchain/common.env:" in text, unit.name
            continue
        for name in ("common", service.group(1)):
            assert f"--env-file /etc/permitchain/{name}.env" in text, unit.name
            assert (ROOT / "deploy" / "config" / f"{name}.env.example").is_file()
            assert (ROOT / "deploy" / "config" / "production" / f"{name}.env.example").is_file()


def test_up_reads_its_env_file_strictly_before_starting_anything(tmp_path: Path) -> None:
    f = tmp_path / "up.env"
    f.write_text("ALLOW_LIST=BTCUSDT\n")
    out = _permitchain("up", "--env-file", str(f), env={})
    assert out.returncode == 2
    assert "not a setting: ALLOW_LIST (did you mean ALLOW_LIST_SYMBOLS?)" in out.stderr
    assert "up:" not in out.stdout  # no service was started
