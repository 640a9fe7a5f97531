"""The lowest version of every runtime dependency range in pyproject.toml, as pip constraints.

    python3 tools/lowest_deps.py > lowest.txt      # redis==8.0, pydantic==2.7, …
    pip install -c lowest.txt -e '.[test]'         # a venv at the bottom of every range
    python tools/lowest_deps.py --check            # exit 1 unless that venv really is there

.ci/run builds such a venv and runs the tests that touch Redis and the CLI in it, so that a
range the code does not support (an import that exists only in a later release) fails CI.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")
_LOWEST = re.compile(r"(?:>=|==)\s*([0-9][^,\s]*)")


def lowest(pyproject: Path = PYPROJECT) -> dict[str, tuple[str, str]]:
    """name → (lowest version, environment marker or "") for each runtime dependency."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out: dict[str, tuple[str, str]] = {}
    for dep in deps:
        m = _REQ.match(dep)
        if m is None:
            raise SystemExit(f"cannot read the requirement {dep!r}")
        name, spec, marker = m.group(1), m.group(2), (m.group(3) or "")
        low = _LOWEST.search(spec)
        if low is None:
            raise SystemExit(f"{name}: no lower bound (>= or ==) in {dep!r}")
        out[name.lower()] = (low.group(1), marker.strip())
    return out


def constraints(pyproject: Path = PYPROJECT) -> str:
    return "".join(f"{n}=={v}{' ' + m if m else ''}\n" for n, (v, m) in lowest(pyproject).items())


def _norm(version: str) -> str:
    """``13.0.0`` and ``13`` are one version."""
    parts = version.split("+", maxsplit=1)[0].split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def check(pyproject: Path = PYPROJECT) -> list[str]:
    """The dependencies installed here at another version than their lowest."""
    wrong = []
    for name, (version, _marker) in lowest(pyproject).items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # its marker excludes this platform
        if _norm(have) != _norm(version):
            wrong.append(f"{name}: {have} installed, lowest is {version}")
    return wrong


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        print(
            "lowest versions: "
            + ("WRONG" if problems else "ok")
            + ": "
            + ", ".join(f"{n} {v}" for n, (v, _m) in lowest().items())
        )
        sys.exit(1 if problems else 0)
    sys.stdout.write(constraints())
