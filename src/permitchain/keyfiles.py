"""Key custody: key files, systemd credentials, generation, rotation, and which service may
hold which key.

Files (``permitchain keys generate --dir DIR``): ``<issuer>.key`` (the Ed25519 private key,
PEM PKCS#8, mode 0600) and ``<issuer>.pub`` (one or more public keys, PEM, each optionally
preceded by ``# kid: …`` and ``# not_after: <ISO UTC>`` lines) for the issuers ``governor``,
``p33`` and ``operator``.

A service finds an issuer's private key in ``PERMIT_<ISSUER>_KEY_FILE``, else in
``$CREDENTIALS_DIRECTORY/<issuer>.key`` (systemd ``LoadCredential=``); its public keys in
``PERMIT_PUBLIC_KEYS_DIR/<issuer>.pub`` and ``$CREDENTIALS_DIRECTORY/<issuer>.pub`` (both read).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import ApplyMode, PermitSignature, Settings
from permitchain.contract.signing import (
    GOVERNOR,
    ISSUERS,
    OPERATOR,
    P33,
    Ed25519Signer,
    HmacSigner,
    PublicKey,
    Signer,
    Verifier,
    key_id,
)

#: The private key each service signs with (none for the others).
SIGNS_AS = {"governor": GOVERNOR, "position-brain": P33}
#: The issuers whose signatures each service verifies.
VERIFIES = {
    "apply-layer": (GOVERNOR, P33, OPERATOR),
    "governor": (OPERATOR,),
    "position-brain": (OPERATOR,),
    "exit-brain": (),
}
_BEGIN, _END = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"


def key_file_setting(issuer: str) -> str:
    return f"PERMIT_{issuer.upper()}_KEY_FILE"


def _key_file(settings: Settings, issuer: str) -> Path | None:
    return {
        GOVERNOR: settings.permit_governor_key_file,
        P33: settings.permit_p33_key_file,
        OPERATOR: settings.permit_operator_key_file,
    }[issuer]


@dataclass(frozen=True, slots=True)
class Held:
    """Where a private key was found: the setting's name or the credential file."""

    issuer: str
    path: Path
    source: str  # "PERMIT_GOVERNOR_KEY_FILE" or "$CREDENTIALS_DIRECTORY/governor.key"


def private_key_location(settings: Settings, issuer: str) -> Held | None:
    path = _key_file(settings, issuer)
    if path is not None:
        return Held(issuer, path, key_file_setting(issuer))
    creds = settings.credentials_directory
    if creds is not None and (creds / f"{issuer}.key").is_file():
        return Held(issuer, creds / f"{issuer}.key", f"$CREDENTIALS_DIRECTORY/{issuer}.key")
    return None


def public_key_files(settings: Settings, issuer: str) -> list[Path]:
    out = []
    for base in (settings.permit_public_keys_dir, settings.credentials_directory):
        if base is not None and (base / f"{issuer}.pub").is_file():
            out.append(base / f"{issuer}.pub")
    return out


# -- reading -------------------------------------------------------------------------------
def load_private(path: Path, name: str) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"{name}: cannot read {path}: {e.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{name}: {path} is not an Ed25519 private key")
    return key


def _iso_epoch(text: str, where: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ConfigError(f"{where}: not_after: not an ISO time: {text!r}") from None


def parse_public_file(text: str, issuer: str, where: str) -> list[PublicKey]:
    """Every PEM public key in ``text``; a ``# not_after:`` line applies to the next key."""
    keys: list[PublicKey] = []
    not_after: float | None = None
    block: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if block is not None:
            block.append(line)
            if line == _END:
                try:
                    key = load_pem_public_key("\n".join(block).encode())
                except ValueError:
                    raise ConfigError(f"{where}: a public key block does not parse") from None
                if not isinstance(key, Ed25519PublicKey):
                    raise ConfigError(f"{where}: not an Ed25519 public key")
                keys.append(PublicKey.of(issuer, key, not_after))
                block, not_after = None, None
        elif line == _BEGIN:
            block = [line]
        elif line.startswith("# not_after:"):
            not_after = _iso_epoch(line.partition(":")[2].strip(), where)
    if block is not None:
        raise ConfigError(f"{where}: unterminated public key block")
    return keys


def load_public(path: Path, issuer: str) -> list[PublicKey]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"PERMIT_PUBLIC_KEYS_DIR: cannot read {path}: {e.strerror}") from None
    return parse_public_file(text, issuer, str(path))


def signer_for(settings: Settings, issuer: str) -> Signer | None:
    """The signer for ``issuer``'s permits: its private key, or its HMAC secret with
    ``PERMIT_SIGNATURE=hmac``; None when none is configured (unsigned, outside production)."""
    if settings.permit_signature is PermitSignature.HMAC:
        secret = {GOVERNOR: settings.permit_key_governor, P33: settings.permit_key_p33}.get(issuer)
        return None if secret is None else HmacSigner(secret.get_secret_value())
    held = private_key_location(settings, issuer)
    if held is None:
        return None
    return Ed25519Signer.of(issuer, load_private(held.path, held.source))


def verifier_for(settings: Settings, issuers: tuple[str, ...] = ISSUERS) -> Verifier:
    """Public keys for ``issuers``; with ``PERMIT_SIGNATURE=hmac`` the gatekeepers' HMAC
    secrets instead of their public keys (the operator always signs with Ed25519)."""
    hmac = settings.permit_signature is PermitSignature.HMAC
    secrets: dict[str, str] = {}
    if hmac:
        for issuer, secret in (
            (GOVERNOR, settings.permit_key_governor),
            (P33, settings.permit_key_p33),
        ):
            if secret is not None:
                secrets[issuer] = secret.get_secret_value()
    keys = [
        k
        for i in issuers
        if not (hmac and i in (GOVERNOR, P33))
        for path in public_key_files(settings, i)
        for k in load_public(path, i)
    ]
    return Verifier.of(keys, secrets)


# -- custody -------------------------------------------------------------------------------
def check_custody(settings: Settings, service: str | None) -> None:
    """Refuse (ConfigError naming the variable or file) what production must never run with:
    HMAC; a private key the service does not sign with; a signer without its key; a verifier
    without a public key for an issuer it verifies. ``service`` None: the whole chain (`up`)."""
    if settings.permit_signature is not PermitSignature.HMAC:
        for name, value in (
            ("PERMIT_KEY_GOVERNOR", settings.permit_key_governor),
            ("PERMIT_KEY_P33", settings.permit_key_p33),
        ):
            if value is not None:
                raise ConfigError(
                    f"{name}: an HMAC secret is used only with PERMIT_SIGNATURE=hmac "
                    "(outside production); Ed25519 keys are files"
                )
    if settings.apply_mode is not ApplyMode.PRODUCTION:
        return
    if settings.permit_signature is PermitSignature.HMAC:
        raise ConfigError(
            "PERMIT_SIGNATURE: APPLY_MODE=production requires ed25519 (public-key "
            "permits); hmac is for testnet and dry runs only"
        )
    if service is None:
        return
    own = SIGNS_AS.get(service)
    for issuer in ISSUERS:
        held = private_key_location(settings, issuer)
        if held is not None and issuer != own:
            raise ConfigError(
                f"{held.source}: {service} must not hold the {issuer} private key ({held.path})"
            )
        if held is not None and held.path.is_file() and held.path.stat().st_mode & 0o077:
            raise ConfigError(
                f"{held.source}: {held.path} is readable by group or others (chmod 600)"
            )
    if own is not None and private_key_location(settings, own) is None:
        raise ConfigError(
            f"{key_file_setting(own)}: {service} signs its permits with Ed25519 in "
            f"production; no {own} private key (nor $CREDENTIALS_DIRECTORY/"
            f"{own}.key)"
        )
    if own is not None:
        held = private_key_location(settings, own)
        assert held is not None
        load_private(held.path, held.source)
    verifier = verifier_for(settings, VERIFIES.get(service, ()))
    for issuer in VERIFIES.get(service, ()):
        if not verifier.keys.get(issuer):
            raise ConfigError(
                f"PERMIT_PUBLIC_KEYS_DIR: {service} has no public key for {issuer} "
                f"({issuer}.pub there or in $CREDENTIALS_DIRECTORY)"
            )


# -- writing -------------------------------------------------------------------------------
def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _public_entry(key: PublicKey) -> str:
    pem = key.key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    head = f"# kid: {key.kid}\n"
    if key.not_after is not None:
        when = datetime.fromtimestamp(key.not_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        head += f"# not_after: {when}\n"
    return head + pem


def _write_public(path: Path, keys: list[PublicKey]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(_public_entry(k) for k in keys))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def generate(
    directory: Path, issuers: tuple[str, ...] = ISSUERS, *, force: bool = False
) -> dict[str, str]:
    """One key pair per issuer in ``directory``; returns issuer → kid. Refuses to overwrite."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = [f"{i}.key" for i in issuers if (directory / f"{i}.key").exists()]
    if existing and not force:
        raise ConfigError(
            f"--dir: {directory} already holds {', '.join(existing)} "
            "(use `permitchain keys rotate ISSUER` to replace a key)"
        )
    out = {}
    for issuer in issuers:
        key = Ed25519PrivateKey.generate()
        _write_private(directory / f"{issuer}.key", key)
        _write_public(directory / f"{issuer}.pub", [PublicKey.of(issuer, key.public_key())])
        out[issuer] = key_id(key.public_key())
    return out


def rotate(
    directory: Path, issuer: str, retire_after_s: float, now: float | None = None
) -> tuple[str, list[str]]:
    """A new pair for ``issuer``: the private key file is replaced; the public file lists the
    new key and the previous ones, each now ending ``retire_after_s`` from now (keys already
    past their end are dropped). Returns (new kid, kids kept until retired)."""
    if issuer not in ISSUERS:
        raise ConfigError(f"ISSUER: unknown issuer {issuer!r}; one of: {', '.join(ISSUERS)}")
    t = time.time() if now is None else now
    pub_path = directory / f"{issuer}.pub"
    old = load_public(pub_path, issuer) if pub_path.is_file() else []
    kept = [
        PublicKey(
            k.issuer, k.key, k.kid, min(k.not_after or t + retire_after_s, t + retire_after_s)
        )
        for k in old
        if k.not_after is None or k.not_after > t
    ]
    key = Ed25519PrivateKey.generate()
    new = PublicKey.of(issuer, key.public_key())
    _write_public(pub_path, [new, *kept])  # the new public key first, before any signer uses it
    _write_private(directory / f"{issuer}.key", key)
    return new.kid, [k.kid for k in kept]
