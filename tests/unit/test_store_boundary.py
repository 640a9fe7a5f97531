"""The store's boundary: the topology and the lean transport are known inside ``store/`` only.

Which server the chain runs on (single / Sentinel or Cluster) is decided once, where the
client's steps are made (``store/steps.py``); the services call the steps and never ask. The
lean transport's internals stay in the store too. These checks read the source, so a new
branch on the topology (or a reach into the transport) fails here, with file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import permitchain

SRC = Path(permitchain.__file__).parent
SERVICES = ("apply_layer", "governor", "position_brain", "exit_brain")
#: The simulated exchange (exchange/sim*.py) has its own Cluster mode, outside this rule.
EXEMPT = re.compile(r"^exchange/sim[^/]*\.py$")

TOPOLOGY = re.compile(r"is_cluster|\.cluster\b")
LEAN = re.compile(r"\bLeanScript\b|\bafter_reads\b|\.lean\b|\bNEVER_DECODE\b")


def _hits(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    out = []
    for f in files:
        for no, line in enumerate(f.read_text().splitlines(), 1):
            if pattern.search(line):
                out.append(f"{f.relative_to(SRC)}:{no}: {line.strip()}")
    return out


def _outside_store() -> list[Path]:
    return [
        f
        for f in sorted(SRC.rglob("*.py"))
        if f.relative_to(SRC).parts[0] != "store"
        and not EXEMPT.match(f.relative_to(SRC).as_posix())
    ]


def test_the_checks_see_the_source() -> None:
    """The patterns find what they look for (in the store, where it belongs)."""
    store = sorted((SRC / "store").glob("*.py"))
    assert _hits(TOPOLOGY, store) and _hits(LEAN, store)
    assert len(_outside_store()) > 50


@pytest.mark.parametrize("package", SERVICES)
def test_no_service_branches_on_the_topology(package: str) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files
    assert _hits(TOPOLOGY, files) == []


def test_is_cluster_is_asked_in_the_store_only() -> None:
    assert _hits(re.compile(r"\bis_cluster\b"), _outside_store()) == []


def test_the_lean_transport_is_used_in_the_store_only() -> None:
    assert _hits(LEAN, _outside_store()) == []
