from __future__ import annotations

from pathlib import Path

import pytest

from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import ApplyMode, PermitSignature, load_settings


def test_defaults_follow_the_contract() -> None:
    s = load_settings({})
    assert s.apply_mode is ApplyMode.TESTNET
    assert (s.dedupe_ttl_s, s.permit_ttl_s, s.permit_wait_ms) == (300, 60, 1200)
    assert (s.max_exec_per_hour, s.max_exec_per_5min, s.cooldown_s) == (3, 2, 15.0)
    assert str(s.kill_score_threshold) == "0.5" and str(s.position_tolerance) == "0.001"
    assert s.exec_record_ttl_s == 7 * 86400  # exec records kept 7 days


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"APPLY_MODE": "live"}, "APPLY_MODE"),
        ({"DEDUPE_TTL": "soon"}, "DEDUPE_TTL"),
        ({"KILL_SCORE_THRESHOLD": "1.5"}, "KILL_SCORE_THRESHOLD"),
        ({"ALLOW_LIST_SYMBOLS": "BTCUSDT,btc-usdt"}, "ALLOW_LIST_SYMBOLS"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"KILL_SCORE_TRESHOLD": "0.3"}, "KILL_SCORE_THRESHOLD"),  # a typo is refused
        ({"EXCHANGE": "kraken"}, "EXCHANGE"),
        ({"EXEC_RECORD_TTL_S": "299"}, "EXEC_RECORD_TTL_S"),  # below the 300 s floor
        # shorter than its guards need: a plan may live 900 s here
        ({"EXEC_RECORD_TTL_S": "600", "PLAN_MAX_AGE_S": "900"}, "EXEC_RECORD_TTL_S"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_secrets_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"PERMIT_KEY_GOVERNOR": "x" * 10, "METRICS_PORT": "-5"})
    assert "xxxxxxxxxx" not in str(e.value)


def test_env_file_with_unknown_key_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "p.env"
    f.write_text("APPLY_MODE=dry_run\nCOOLDOWN=5\n")
    with pytest.raises(ConfigError, match="COOLDOWN"):
        load_settings({}, env_file=f)
    f.write_text("# comment\nAPPLY_MODE=dry_run\nCOOLDOWN_S=5\n")
    s = load_settings({"COOLDOWN_S": "7"}, env_file=f)
    assert s.apply_mode is ApplyMode.DRY_RUN and s.cooldown_s == 7.0  # environment wins


@pytest.mark.parametrize("variant", ["", "production"])
@pytest.mark.parametrize(
    "service", ["governor", "position-brain", "apply-layer", "exit-brain", "console"]
)
def test_the_shipped_example_env_files_load(variant: str, service: str) -> None:
    folder = Path(__file__).resolve().parents[2] / "deploy" / "config" / variant
    files = [folder / "common.env.example", folder / f"{service}.env.example"]
    s = load_settings({}, env_file=files)
    assert s.key_prefix == "quantum" and s.redis_url
    if variant == "production":
        assert s.apply_mode is ApplyMode.PRODUCTION
        assert s.permit_signature is PermitSignature.ED25519 and s.permit_key_governor is None


def test_exec_record_retention_floor_follows_the_guards() -> None:
    """The floor is what the guards need: plan age + permit TTL + permit wait + open order."""
    s = load_settings({"EXEC_RECORD_TTL_S": "300"})  # defaults: 30 + 60 + 2 + 180 = 272
    assert s.exec_record_ttl_s == 300 and s.exec_retention_floor_s == 272
    longer = load_settings({"EXEC_RECORD_TTL_S": "900", "PLAN_MAX_AGE_S": "600"})
    assert longer.exec_retention_floor_s == 600 + 60 + 2 + 180
