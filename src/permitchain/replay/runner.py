"""One replay from its inputs: settings and options from ``--set``, entries, files → report.

Settings are the environment's (as every command reads them) with ``--set NAME=VALUE`` on
top; ``APPLY_MODE`` defaults to ``production`` here (the governor's rate limits apply, as
they would with money), unless the environment or ``--set`` says otherwise. Names starting
with ``REPLAY_`` are the replay's own (:class:`~permitchain.replay.engine.Options`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import Settings, _read_env_file, env_names, load_settings
from permitchain.replay.data import DataError, Series, read_series
from permitchain.replay.engine import NAMES, Options, Replayer, SeriesResult
from permitchain.replay.entries import Entry, Rule, parse_rule, read_entries

#: Settings the replay reports with its results (the ones that shape it).
REPORTED = (
    "APPLY_MODE",
    "EXIT_BAR_S",
    "EXIT_SHORT_WINDOW",
    "EXIT_REF_WINDOW",
    "FULL_CLOSE_SCORE",
    "EXIT_TRANCHE_R",
    "EXIT_BREAK_EVEN_R",
    "EXIT_BREAK_EVEN_OFFSET",
    "EXIT_RISK_FRACTION",
    "EXIT_FEE_RATE",
    "EXIT_RETRY_S",
    "EXIT_FULL_CLOSE_RETRY_S",
    "KILL_SCORE_THRESHOLD",
    "MAX_EXEC_PER_5MIN",
    "MAX_EXEC_PER_HOUR",
    "COOLDOWN_S",
    "TESTNET_AUTO_APPROVE",
)
DEFAULT_ENTRIES = "every:6h:alternate"


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {p!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def build_settings(
    sets: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> tuple[Settings, Options]:
    env = dict(os.environ if environ is None else environ)
    ours = {k: v for k, v in sets.items() if k.startswith("REPLAY_")}
    rest = {k: v for k, v in sets.items() if not k.startswith("REPLAY_")}
    unknown = [k for k in rest if k not in env_names()]
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: unknown setting")
    merged = {**env, **rest}
    settings = load_settings(merged)
    file_path = merged.get("PERMITCHAIN_ENV_FILE")
    from_file = _read_env_file(Path(file_path)) if file_path else {}
    if "APPLY_MODE" not in merged and "APPLY_MODE" not in from_file:
        settings = load_settings({**merged, "APPLY_MODE": "production"})
    opts = Options()
    for k, v in ours.items():
        if k not in NAMES:
            raise ConfigError(f"--set {k}: unknown replay option (one of {', '.join(NAMES)})")
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise ConfigError(f"--set {k}: not a number: {v!r}") from None
        if not d.is_finite() or d < 0 or (d == 0 and k != "REPLAY_SLIPPAGE"):
            raise ConfigError(f"--set {k}: must be positive: {v!r}")
        opts = replace(opts, **{NAMES[k]: d})
    return settings, opts


def parse_entries(spec: str) -> Rule | list[Entry]:
    rule = parse_rule(spec)
    if rule is not None:
        return rule
    if spec.startswith("every:"):
        raise ConfigError(f"--entries {spec!r}: expected every:<n><m|h|d>:<long|short|alternate>")
    return read_entries(spec)


def options_dict(o: Options) -> dict[str, str | None]:
    by_field = {v: k for k, v in NAMES.items()}
    out: dict[str, str | None] = {}
    for f in fields(o):
        v = getattr(o, f.name)
        out[by_field[f.name]] = None if v is None else str(v)
    return out


def settings_dict(s: Settings) -> dict[str, str]:
    names = env_names()
    out = {}
    for n in REPORTED:
        v: Any = getattr(s, names[n])
        out[n] = str(v.value if hasattr(v, "value") else v)
    return out


def load(paths: Sequence[str]) -> list[Series]:
    return [read_series(p) for p in paths]


def replay(
    series: Sequence[Series],
    settings: Settings,
    options: Options,
    entries: Rule | list[Entry],
    progress: Callable[[int], None] | None = None,
) -> list[SeriesResult]:
    r = Replayer(settings, options, entries)
    return [r.run(s, progress) for s in series]


def inputs_dict(
    series: Sequence[Series], spec: str, settings: Settings, options: Options
) -> dict[str, Any]:
    return {
        "files": [s.name for s in series],
        "entries": spec,
        "settings": settings_dict(settings),
        "options": options_dict(options),
    }


__all__ = ["DataError", "build_settings", "load", "parse_entries", "parse_sets", "replay"]
