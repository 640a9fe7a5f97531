"""Lua scripts, loaded from ``lua/*.lua`` once and registered once per client.

Redis scripts cannot import code, so shared Lua lives in ``lua/lib/*.lua`` and a script takes
it in with a line ``-- @include <name>.lua``: :func:`source` replaces the line with that
file's text when it builds the script's body (once per process). That expanded body is what
is sent, hashed (EVALSHA) and loaded; line numbers in a Redis error refer to it.

``Scripts(client)`` wraps each file in redis-py's ``Script`` object: EVALSHA with a NOSCRIPT
fallback to EVAL, usable inside pipelines (on a lean client, a :class:`LeanScript` runs it
with less per-call work, the same way). Every key a script touches is passed in KEYS.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from hiredis import ReplyError
from redis.exceptions import NoScriptError

from permitchain.store.lean import error_of, finish

_BY_CLIENT: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


#: An include line: ``-- @include <name>.lua`` (a file of ``lua/lib/``) and nothing else.
_INCLUDE = re.compile(r"^--\s*@include\b(.*)$")
_LIB_NAME = re.compile(r"[a-z0-9_]+\.lua")


class ScriptSourceError(ValueError):
    """A script's text cannot be built: a malformed or unknown include. Names the file."""


def _lua_dir() -> Any:
    return resources.files("permitchain") / "lua"


def names() -> list[str]:
    """The names of the scripts (``lua/<name>.lua``; not the included files of ``lua/lib/``)."""
    return sorted(
        f.name.removesuffix(".lua")
        for f in _lua_dir().iterdir()
        if f.is_file() and f.name.endswith(".lua")
    )


def expand(text: str, origin: str, lib: Any = None) -> str:
    """``text`` (of the file ``origin``) with each include line replaced by the text of its
    file in ``lib`` (default ``lua/lib/``). An included file may not include in turn, and a
    file is included at most once: anything else raises :class:`ScriptSourceError`."""
    lib = _lua_dir() / "lib" if lib is None else lib
    out: list[str] = []
    seen: set[str] = set()
    for no, line in enumerate(text.splitlines(keepends=True), 1):
        m = _INCLUDE.match(line.rstrip("\r\n"))
        if m is None:
            out.append(line)
            continue
        name = m.group(1).strip()
        where = f"{origin} line {no}"
        if not _LIB_NAME.fullmatch(name):
            raise ScriptSourceError(
                f"{where}: malformed include {line.strip()!r} (expected '-- @include <name>.lua')"
            )
        if name in seen:
            raise ScriptSourceError(f"{where}: lib/{name} included twice")
        seen.add(name)
        f = lib / name
        if not f.is_file():
            raise ScriptSourceError(f"{where}: include of lib/{name}: no such file")
        body = f.read_text()
        if any(_INCLUDE.match(x) for x in body.splitlines()):
            raise ScriptSourceError(
                f"lib/{name} (included by {where}): an included file may not include another"
            )
        out.append(body if body.endswith("\n") else body + "\n")
    return "".join(out)


@cache
def source(name: str) -> str:
    """The body of script ``name`` as sent to Redis: ``lua/<name>.lua``, includes expanded."""
    return expand((_lua_dir() / f"{name}.lua").read_text(), f"{name}.lua")


class LeanScript:
    """A script of a lean client (``permitchain.store.lean``), run as one EVALSHA through the
    client's ``execute_command``: redis-py's ``AsyncScript`` adds two calls and an import to
    every run. As there: NOSCRIPT loads the script and runs it once more. In a pipeline
    (``client=``), redis-py's script object runs it (it registers itself with the pipeline)."""

    __slots__ = ("client", "script")

    def __init__(self, client: Any, script: Any) -> None:
        self.client, self.script = client, script

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        if client is not None:
            return await self.script(keys=keys, args=args, client=client)
        script = self.script
        try:
            return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.sha = await self.client.script_load(script.script)
            return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def after_reads(
        self,
        reads: Sequence[tuple[Sequence[Any], bool]],
        keys: Sequence[Any],
        args: Sequence[Any],
    ) -> tuple[list[Any], Any]:
        """Read-only commands (arguments, reply undecoded?), then the script, in one write on
        the lean connection: (the reads' replies, an error reply as its exception; the
        script's result, an error raised). Unlike a pipeline, which loads its scripts ahead
        each time, a NOSCRIPT reply loads the script and sends all again: the script did not
        run, and the reads change nothing."""
        lean = self.client.lean
        script = self.script
        for _attempt in range(2):
            cmds = [*reads, (("EVALSHA", script.sha, len(keys), *keys, *args), False)]
            *replies, res = await lean.call_many(cmds)
            try:
                res = finish("EVALSHA", res, {})
            except NoScriptError:
                script.sha = await self.client.script_load(script.script)
                continue
            return [error_of(x) if isinstance(x, ReplyError) else x for x in replies], res
        raise NoScriptError("script not loaded")  # loaded just before: the server lost it again


class Scripts:
    """The registered scripts of one Redis client (sync or asyncio)."""

    def __init__(self, client: Any) -> None:
        lean = getattr(client, "lean", None) is not None

        def register(name: str) -> Any:
            script = client.register_script(source(name))
            return LeanScript(client, script) if lean else script

        self.consume_permits = register("consume_permits")
        self.publish_plan = register("publish_plan")
        self.block_plan = register("block_plan")
        self.sim_order = register("sim_order")
        self.governor_reserve = register("governor_reserve")
        self.exec_transition = register("exec_transition")
        # Redis Cluster only: exec_transition's move on the exec record's slot alone
        self.exec_move = register("exec_move")
        self.exec_outbox_done = register("exec_outbox_done")
        self.ledger_apply = register("ledger_apply")
        self.release_claim = register("release_claim")
        # P3.3's allow with the symbol's in-flight claim (plain and Sentinel servers)
        self.p33_claim_permit = register("p33_claim_permit")
        # a full poll's unchanged snapshots, a chunk per call (plain and Sentinel servers)
        self.snapshot_touch = register("snapshot_touch")


def flat_pairs(fields: Mapping[str, str]) -> list[str]:
    """A script argument block: the number of pairs, then name, value, name, value…"""
    out: list[str] = [str(len(fields))]
    for k, v in fields.items():
        out += [k, v]
    return out


def scripts_for(client: Any) -> Scripts:
    """The client's registered scripts, made once per client."""
    s = _BY_CLIENT.get(client)
    if s is None:
        s = _BY_CLIENT[client] = Scripts(client)
    return s
