"""Console tokens: where they come from, how a header is matched, when start-up is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from permitchain.console import auth
from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import Settings

SECRET = "0123456789abcdef0123"


def test_bare_and_named_tokens() -> None:
    tokens = auth.parse_tokens(f"{SECRET}, bob:{'b' * 20}\n# comment\n")
    assert [t.name for t in tokens] == ["console", "bob"]
    assert auth.match(tokens, f"Bearer {'b' * 20}") == tokens[1]
    assert auth.match(tokens, f"bearer {SECRET}") == tokens[0]
    assert auth.match(tokens, f"Basic {SECRET}") is None
    assert auth.match(tokens, "Bearer nope") is None
    assert auth.match(tokens, None) is None


@pytest.mark.parametrize("text", ["short", "bad name!:" + SECRET])
def test_weak_or_malformed_tokens_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="CONSOLE_TOKEN"):
        auth.parse_tokens(text)


def test_token_file_and_systemd_credential(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(f"alice:{SECRET}\n")
    s = Settings(console_token_file=f)
    assert auth.load_tokens(s, {})[0].name == "alice"
    (tmp_path / auth.CREDENTIAL_NAME).write_text(SECRET)
    creds = auth.load_tokens(Settings(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert creds == (auth.Token("console", SECRET),)
    assert auth.load_tokens(Settings(), {}) == ()
    with pytest.raises(ConfigError, match="CONSOLE_TOKEN_FILE"):
        auth.load_tokens(Settings(console_token_file=tmp_path / "missing"), {})


def test_no_token_on_a_public_bind_refuses_to_start() -> None:
    auth.check_start(Settings(console_bind="127.0.0.1:8046"), ())
    auth.check_start(Settings(console_bind="localhost:8046"), ())
    with pytest.raises(ConfigError, match=r"CONSOLE_BIND.*not a loopback"):
        auth.check_start(Settings(console_bind="0.0.0.0:8046"), ())
    tokens = auth.parse_tokens(SECRET)
    auth.check_start(Settings(console_bind="0.0.0.0:8046"), tokens)


def test_operator_name() -> None:
    t = auth.Token("alice", SECRET)
    assert auth.operator_name(t, None) == "alice"
    assert auth.operator_name(t, "bob") == "bob@alice"
    assert auth.operator_name(t, "bob; DROP") == "alice"  # not a name: ignored


def test_secrets_are_masked_in_setting_errors() -> None:
    from permitchain.contract.settings import load_settings

    with pytest.raises(ConfigError) as e:
        load_settings({"CONSOLE_TOKEN": SECRET, "NOTIFY_DEDUPE_S": "x"})
    assert SECRET not in str(e.value)
