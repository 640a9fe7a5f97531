"""Bearer tokens for the console: where they come from, how a request is checked.

Tokens come from ``CONSOLE_TOKEN``, else ``CONSOLE_TOKEN_FILE``, else the systemd credential
``$CREDENTIALS_DIRECTORY/console_token``. Each is either a bare token (its operator is named
``console``) or ``name:token`` pairs, comma- or line-separated, one per operator. The
operator recorded in the audit stream is the token's name, with the ``X-Operator`` header
the page sends appended (``alice@console``). Only the ``Authorization: Bearer`` header is
read: no cookies, so no request can be forged from another site.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import Settings

CREDENTIAL_NAME = "console_token"
DEFAULT_OPERATOR = "console"
MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret: str


def parse_tokens(text: str) -> tuple[Token, ...]:
    """``secret`` or ``name:secret`` items, comma- or line-separated."""
    out: list[Token] = []
    for raw in re.split(r"[,\n]", text):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, secret = item.partition(":")
        if not sep:
            name, secret = DEFAULT_OPERATOR, item
        if not _NAME.match(name):
            raise ConfigError("CONSOLE_TOKEN: an operator name is letters, digits, _ . - only")
        if len(secret) < MIN_TOKEN_CHARS:
            raise ConfigError(f"CONSOLE_TOKEN: a token needs {MIN_TOKEN_CHARS} characters or more")
        out.append(Token(name, secret))
    return tuple(out)


def load_tokens(s: Settings, environ: Mapping[str, str] | None = None) -> tuple[Token, ...]:
    env = os.environ if environ is None else environ
    if s.console_token is not None:
        return parse_tokens(s.console_token.get_secret_value())
    path: Path | None = s.console_token_file
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        path = candidate if candidate.is_file() else None
    if path is None:
        return ()
    try:
        return parse_tokens(path.read_text())
    except OSError as e:
        raise ConfigError(f"CONSOLE_TOKEN_FILE: cannot read {path}: {e.strerror}") from None


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    n = int(port)
    if not 0 <= n <= 65535:
        raise ConfigError(f"CONSOLE_BIND: port {n} out of range")
    return host, n


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_start(s: Settings, tokens: tuple[Token, ...]) -> None:
    """Refuse to serve beyond this machine without a token."""
    host, _ = split_bind(s.console_bind)
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"CONSOLE_BIND: {host} is not a loopback address and no CONSOLE_TOKEN is set; "
            "set a token (or a token file) to serve beyond this machine"
        )


def match(tokens: tuple[Token, ...], header: str | None) -> Token | None:
    """The token an ``Authorization`` header carries, compared in constant time."""
    if not header:
        return None
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    given_b = given.strip().encode()
    found = None
    for t in tokens:
        if hmac.compare_digest(t.secret.encode(), given_b):
            found = t
    return found


def operator_name(token: Token, header: str | None) -> str:
    who = (header or "").strip()
    if who and _NAME.match(who):
        return f"{who}@{token.name}"
    return token.name
