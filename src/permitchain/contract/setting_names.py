"""Which environment variables look like a setting someone meant to set (docs/operations.md).

A variable that is not a setting but is *close* to one is refused at start, so that
``MAX_EXEC_HOUR=1`` cannot start a governor on its default of 3 while the operator believes
the limit is 1. Names are compared as upper-case word pieces (split on anything that is not a
letter or digit); a name is close to a setting when

1. **same pieces**: it is the setting in another case or with other separators
   (``apply_mode``, ``Apply-Mode``, ``APPLYMODE``);
2. **dropped pieces**: it has at least two pieces and they are, in order, pieces of the
   setting, each equal to one or an abbreviation of at least three letters
   (``MAX_EXEC_HOUR``, ``POSITION_TOL``, ``ALLOW_LIST``);
3. **added pieces**: the setting has at least two pieces, they are, in order, pieces of the
   name, and every other piece of the name is a word of some setting or ``PERMITCHAIN``
   (``PERMITCHAIN_APPLY_MODE``, ``APPLY_DRY_RUN``); a piece from another tool's vocabulary
   (``NPM_CONFIG_LOG_LEVEL``) makes it someone else's variable;
4. **a typo**: ``difflib``'s similarity of the two names is at least ``TYPO_RATIO``
   (``KILL_SCORE_TRESHOLD``, ``DEDUP_TTL``, ``COOLDOWN``).

The values of a setting with a fixed set of choices count as names of that setting with the
value (``DRY_RUN`` → ``APPLY_MODE=dry_run``, ``TESTNET=true`` → ``APPLY_MODE=testnet``), by the
same four rules. Unit pieces compare by meaning: ``S`` = ``SEC`` = ``SECONDS``, ``MS`` =
``MILLIS``, ``PCT`` = ``PERCENT``. Unrelated variables share no two pieces in order with a
setting and are not spelt like one: ``PATH``, ``HOME``, ``LANG``, ``PYTHONPATH``, ``CI``,
``TERM`` pass.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The least ``difflib.SequenceMatcher`` ratio at which two names count as a typo of each other.
TYPO_RATIO = 0.85
#: A piece shorter than this must match a setting's piece exactly (``S`` is not "STALE").
MIN_ABBREVIATION = 3
#: Pieces that may be added to a setting's name besides the settings' own words.
NAMESPACE_PIECES = frozenset({"PERMITCHAIN"})
_UNITS = (
    frozenset({"S", "SEC", "SECS", "SECOND", "SECONDS"}),
    frozenset({"MS", "MSEC", "MILLIS", "MILLISECOND", "MILLISECONDS"}),
    frozenset({"PCT", "PERCENT"}),
)
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def pieces(name: str) -> tuple[str, ...]:
    """``"max-exec_Hour"`` → ``("MAX", "EXEC", "HOUR")``."""
    return tuple(p for p in _SPLIT.split(name.upper()) if p)


def _same_piece(a: str, b: str) -> bool:
    if a == b:
        return True
    if any(a in unit and b in unit for unit in _UNITS):
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= MIN_ABBREVIATION and long.startswith(short)


def _in_order(few: tuple[str, ...], many: tuple[str, ...]) -> list[int] | None:
    """Indexes in ``many`` of each piece of ``few``, matched in order, or None."""
    found: list[int] = []
    at = 0
    for piece in few:
        while at < len(many) and not _same_piece(piece, many[at]):
            at += 1
        if at == len(many):
            return None
        found.append(at)
        at += 1
    return found


@dataclass(frozen=True)
class Target:
    """What a close name is taken to mean: a setting, or a setting with one of its values."""

    pieces: tuple[str, ...]
    suggestion: str  # "APPLY_MODE" or "APPLY_MODE=dry_run"


def targets(settings: Iterable[str], choices: Mapping[str, Iterable[str]]) -> list[Target]:
    out = [Target(pieces(name), name) for name in settings]
    for name, values in choices.items():
        out += [Target(pieces(v), f"{name}={v}") for v in values]
    return out


def _close(name: tuple[str, ...], target: tuple[str, ...], vocabulary: frozenset[str]) -> bool:
    if "".join(name) == "".join(target):
        return True
    if len(name) >= 2 and _in_order(name, target) is not None:
        return True
    if len(target) >= 2 and len(name) > len(target):
        at = _in_order(target, name)
        if at is not None:
            added = [p for i, p in enumerate(name) if i not in at]
            if all(p in vocabulary for p in added):
                return True
    ratio = difflib.SequenceMatcher(None, "_".join(name), "_".join(target)).ratio()
    return ratio >= TYPO_RATIO


def suggestions(name: str, among: list[Target]) -> list[str]:
    """What ``name`` is close to (empty: an unrelated variable), best first."""
    mine = pieces(name)
    if not mine:
        return []
    vocabulary = frozenset(p for t in among for p in t.pieces) | NAMESPACE_PIECES
    close = [t for t in among if _close(mine, t.pieces, vocabulary)]
    joined = "_".join(mine)
    close.sort(key=lambda t: -difflib.SequenceMatcher(None, joined, "_".join(t.pieces)).ratio())
    return [t.suggestion for t in close]
