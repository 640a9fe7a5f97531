"""Key custody: key files, systemd credentials, rotation, and the refusals of
``APPLY_MODE=production`` (each names the variable or the file)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from permitchain.chain import SRC_DIR
from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import ApplyMode, PermitSignature, Settings
from permitchain.contract.signing import GOVERNOR, ISSUERS, OPERATOR, P33
from permitchain.keyfiles import (
    SIGNS_AS,
    VERIFIES,
    check_custody,
    generate,
    load_public,
    rotate,
    signer_for,
    verifier_for,
)

PROD = ApplyMode.PRODUCTION


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    generate(tmp_path / "keys")
    return tmp_path / "keys"


def prod(keydir: Path, **over: object) -> Settings:
    return Settings(apply_mode=PROD, permit_public_keys_dir=keydir, **over)  # type: ignore[arg-type]


def test_generate_writes_one_pair_per_issuer_private_files_0600(tmp_path: Path) -> None:
    kids = generate(tmp_path / "k")
    assert sorted(kids) == sorted(ISSUERS) and len(set(kids.values())) == 3
    for issuer in ISSUERS:
        assert stat.S_IMODE((tmp_path / "k" / f"{issuer}.key").stat().st_mode) == 0o600
        (pub,) = load_public(tmp_path / "k" / f"{issuer}.pub", issuer)
        assert pub.kid == kids[issuer] and pub.not_after is None
    with pytest.raises(ConfigError, match=r"already holds governor\.key"):
        generate(tmp_path / "k")


@pytest.mark.parametrize(
    ("service", "own"), [("governor", "governor"), ("position-brain", "p33"), ("apply-layer", None)]
)
def test_each_service_starts_with_exactly_its_keys(keydir: Path, service: str, own: str) -> None:
    over = {} if own is None else {f"permit_{own}_key_file": keydir / f"{own}.key"}
    check_custody(prod(keydir, **over), service)


@pytest.mark.parametrize(
    ("service", "foreign"),
    [
        ("governor", "p33"),
        ("governor", "operator"),
        ("position-brain", "governor"),
        ("position-brain", "operator"),
        ("apply-layer", "governor"),
        ("apply-layer", "p33"),
        ("apply-layer", "operator"),
        ("exit-brain", "operator"),
    ],
)
def test_a_private_key_the_service_must_not_hold_is_refused(
    keydir: Path, service: str, foreign: str
) -> None:
    own = {"governor": "governor", "position-brain": "p33"}.get(service)
    over: dict[str, object] = {f"permit_{foreign}_key_file": keydir / f"{foreign}.key"}
    if own:
        over[f"permit_{own}_key_file"] = keydir / f"{own}.key"
    with pytest.raises(ConfigError) as e:
        check_custody(prod(keydir, **over), service)
    assert str(e.value).startswith(f"PERMIT_{foreign.upper()}_KEY_FILE: {service} must not hold")
    # outside production the same configuration starts (custody is a production rule)
    check_custody(
        prod(keydir, **over).model_copy(update={"apply_mode": ApplyMode.TESTNET}), service
    )


def test_a_private_key_in_the_credentials_directory_is_named(keydir: Path, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    for issuer in ISSUERS:
        shutil.copy(keydir / f"{issuer}.pub", creds / f"{issuer}.pub")
    check_custody(Settings(apply_mode=PROD, credentials_directory=creds), "apply-layer")
    shutil.copy(keydir / "p33.key", creds / "p33.key")
    with pytest.raises(ConfigError, match=r"^\$CREDENTIALS_DIRECTORY/p33.key: apply-layer must"):
        check_custody(Settings(apply_mode=PROD, credentials_directory=creds), "apply-layer")
    # and P3.3 finds its own key there
    s = Settings(apply_mode=PROD, credentials_directory=creds)
    check_custody(s, "position-brain")
    signer = signer_for(s, P33)
    assert (
        signer is not None
        and getattr(signer, "kid", "") == load_public(creds / "p33.pub", P33)[0].kid
    )


@pytest.mark.parametrize(
    ("service", "issuer"),
    [
        ("apply-layer", GOVERNOR),
        ("apply-layer", P33),
        ("apply-layer", OPERATOR),
        ("governor", OPERATOR),
        ("position-brain", OPERATOR),
    ],
)
def test_a_verifier_without_a_public_key_is_refused(
    keydir: Path, service: str, issuer: str
) -> None:
    (keydir / f"{issuer}.pub").unlink()
    own = {"governor": "governor", "position-brain": "p33"}.get(service)
    over = {f"permit_{own}_key_file": keydir / f"{own}.key"} if own else {}
    with pytest.raises(
        ConfigError, match=f"^PERMIT_PUBLIC_KEYS_DIR: {service} has no public key for {issuer}"
    ):
        check_custody(prod(keydir, **over), service)


def test_a_signer_without_its_key_is_refused(keydir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^PERMIT_GOVERNOR_KEY_FILE: governor signs"):
        check_custody(prod(keydir), "governor")


def test_a_private_key_readable_by_others_is_refused(keydir: Path) -> None:
    os.chmod(keydir / "governor.key", 0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        check_custody(prod(keydir, permit_governor_key_file=keydir / "governor.key"), "governor")


def test_hmac_is_refused_in_production_and_needs_its_name_elsewhere(keydir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^PERMIT_SIGNATURE: APPLY_MODE=production requires"):
        check_custody(prod(keydir, permit_signature=PermitSignature.HMAC), None)
    with pytest.raises(ConfigError, match=r"^PERMIT_KEY_GOVERNOR: an HMAC secret is used only"):
        check_custody(Settings(permit_key_governor="g"), None)  # type: ignore[arg-type]
    check_custody(Settings(permit_signature="hmac", permit_key_governor="g"), None)  # type: ignore[arg-type]


def test_the_service_refuses_to_start_with_one_line_and_exit_2(keydir: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": SRC_DIR,
        "APPLY_MODE": "production",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "PERMIT_PUBLIC_KEYS_DIR": str(keydir),
        "PERMIT_GOVERNOR_KEY_FILE": str(keydir / "governor.key"),
    }
    env.pop("PERMITCHAIN_ENV_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "permitchain", "run", "apply-layer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PERMIT_GOVERNOR_KEY_FILE: apply-layer must not hold" in lines[0]


def test_rotation_accepts_both_keys_then_retires_the_old_one(keydir: Path) -> None:
    s = Settings(permit_public_keys_dir=keydir, permit_governor_key_file=keydir / "governor.key")
    old_signer = signer_for(s, GOVERNOR)
    assert old_signer is not None
    old_body: dict[str, object] = {"schema": 1, "plan_id": "0123456789abcdef"}
    old_signer.stamp(old_body)
    new_kid, kept = rotate(keydir, GOVERNOR, retire_after_s=70, now=1_000_000.0)
    assert kept == [old_body["kid"]] and new_kid != old_body["kid"]
    new_signer = signer_for(s, GOVERNOR)
    assert new_signer is not None
    new_body: dict[str, object] = {"schema": 1, "plan_id": "0123456789abcdef"}
    new_signer.stamp(new_body)
    assert new_body["kid"] == new_kid
    v = verifier_for(s)
    assert v.problem(GOVERNOR, new_body, 1_000_069.0) == ""
    assert v.problem(GOVERNOR, old_body, 1_000_069.0) == ""  # both accepted
    assert (
        v.problem(GOVERNOR, old_body, 1_000_071.0) == f"governor signature: key {kept[0]} retired"
    )
    assert v.problem(GOVERNOR, new_body, 1_000_071.0) == ""
    # a second rotation long after drops the retired key from the file
    _kid, kept2 = rotate(keydir, GOVERNOR, retire_after_s=70, now=2_000_000.0)
    assert kept2 == [new_kid]


UNITS = {
    "governor": "quantum-governor",
    "position-brain": "quantum-position-state-brain",
    "apply-layer": "quantum-apply-layer",
    "exit-brain": "quantum-exit-monitor",
}


@pytest.mark.parametrize("service", sorted(UNITS))
def test_each_unit_loads_exactly_the_keys_its_service_may_hold(service: str) -> None:
    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / f"{UNITS[service]}.service"
    creds = [
        line.split("=", 1)[1].split(":", 1)[0]
        for line in unit.read_text().splitlines()
        if line.startswith("LoadCredential=")
    ]
    own = SIGNS_AS.get(service)
    assert sorted(creds) == sorted(
        ([f"{own}.key"] if own else []) + [f"{i}.pub" for i in VERIFIES[service]]
    )


def test_hmac_mode_checks_gatekeepers_by_hmac_and_the_operator_by_its_public_key(
    keydir: Path,
) -> None:
    s = Settings(
        permit_signature="hmac",
        permit_key_governor="g",
        permit_key_p33="p",
        permit_public_keys_dir=keydir,
    )  # type: ignore[arg-type]
    v = verifier_for(s)
    assert set(v.keys) == {OPERATOR} and set(v.hmac_secrets) == {GOVERNOR, P33}
    signer = signer_for(s, GOVERNOR)
    body: dict[str, object] = {"schema": 1, "plan_id": "0123456789abcdef"}
    assert signer is not None
    signer.stamp(body)
    assert v.problem(GOVERNOR, body, 0.0) == "" and "alg" not in body
