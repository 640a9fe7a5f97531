"""The scripts' shared Lua: an include line is replaced by its file's text, and the body sent
(and hashed) is the expanded one; a broken include fails, naming the file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import redis

from permitchain.store.scripts import Scripts, ScriptSourceError, expand, names, source

LIB = Path(__file__).resolve().parents[2] / "src" / "permitchain" / "lua"


def lib(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.lua").write_text(text)
    return tmp_path


def test_an_include_is_replaced_by_its_text(tmp_path: Path) -> None:
    d = lib(tmp_path, a="local function a() return 1 end\n", b="local B = 2")
    text = "-- top\n-- @include a.lua\nlocal x = 1\n--  @include   b.lua  \nreturn a() + B\n"
    assert expand(text, "s.lua", d) == (
        "-- top\nlocal function a() return 1 end\nlocal x = 1\nlocal B = 2\nreturn a() + B\n"
    )
    # a mention that is not an include line stays as it is
    assert expand("x = 1 -- @include a.lua\n-- @includes\n", "s.lua", d) == (
        "x = 1 -- @include a.lua\n-- @includes\n"
    )


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("x = 1\n-- @include nope.lua\n", r"s\.lua line 2: include of lib/nope\.lua: no such file"),
        ("-- @include a\n", r"s\.lua line 1: malformed include '-- @include a'"),
        ("-- @include ../a.lua\n", r"s\.lua line 1: malformed include"),
        ("-- @include\n", r"s\.lua line 1: malformed include"),
        ("-- @include a.lua\n-- @include a.lua\n", r"s\.lua line 2: lib/a\.lua included twice"),
        ("-- @include c.lua\n", r"lib/c\.lua \(included by s\.lua line 1\): an included file"),
    ],
)
def test_a_broken_include_fails_naming_the_file(tmp_path: Path, text: str, msg: str) -> None:
    d = lib(tmp_path, a="local a = 1\n", c="-- @include a.lua\n")
    with pytest.raises(ScriptSourceError, match=msg):
        expand(text, "s.lua", d)


def test_the_scripts_are_built_expanded() -> None:
    assert "lib" not in names() and {"exec_transition", "exec_move", "ledger_apply"} <= set(names())
    shared = {
        "exec_transition": ("exec_state", "arg_blocks"),
        "exec_move": ("exec_state", "arg_blocks"),
        "ledger_apply": ("arg_blocks",),
        "p33_claim_permit": ("arg_blocks",),
    }
    for name in names():
        body = source(name)
        assert "@include" not in body, name
        assert body.startswith(f"-- {name}.lua:"), name  # its KEYS/ARGV comment first
        for inc in shared.get(name, ()):
            assert (LIB / "lib" / f"{inc}.lua").read_text() in body, (name, inc)
    # the argument-block reader and the state check are written once, in lib/
    for name in ("exec_transition", "exec_move", "ledger_apply", "p33_claim_permit"):
        raw = (LIB / f"{name}.lua").read_text()
        assert "local function" not in raw and "string.gmatch" not in raw, name


def test_the_sha_sent_is_the_expanded_bodys(r: redis.Redis, keys: Any) -> None:
    s = Scripts(r)
    for name in ("exec_transition", "exec_move", "ledger_apply"):
        script = getattr(s, name)
        assert script.script == source(name)
        assert script.sha == hashlib.sha1(source(name).encode(), usedforsecurity=False).hexdigest()
    r.script_flush()
    key = keys.exec_record("0123456789abcdef")
    r.hset(key, mapping={"state": "permitted"})
    # NOSCRIPT: loaded (the expanded body) and run; the server then has it under that SHA
    got = s.exec_move(keys=[key], args=["permitted", "submitted", "", 60, "", "0", 1, "a", "b"])
    assert got == [1, "submitted", ""]
    assert r.script_exists(s.exec_move.sha) == [True]
    assert r.hget(key, "state") == "submitted" and r.hget(key, "a") == "b"
    refused = s.exec_move(keys=[key], args=["permitted", "filled", "", 60, "", "0", 0])
    assert refused == [0, "submitted", ""] and r.hget(key, "state") == "submitted"
