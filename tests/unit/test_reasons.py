"""Reason codes: one module defines them all (``permitchain.contract.reasons``), and the
contract's table (docs/design.md §4) names exactly those codes."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from permitchain.contract import reasons

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "permitchain"
CODES = {k: v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
CONSUME_VERDICTS = (
    reasons.OK,
    reasons.ALREADY_EXECUTED,
    reasons.MISSING_GOVERNOR,
    reasons.MISSING_P33,
    reasons.MISSING_BOTH,
    reasons.GOVERNOR_DENIED,
    reasons.P33_DENIED,
    reasons.PERMIT_INVALID,
    reasons.PERMIT_TIMEOUT,
    reasons.WRONG_KEY_TYPE,
)


def design_table_codes() -> dict[str, set[str]]:
    """The codes column of docs/design.md §4's table, by layer."""
    design = (ROOT / "docs" / "design.md").read_text()
    section = design.split("\n## 4. Reason codes\n", 1)[1].split("\n## 5. ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| layer | codes |"), rows[0]
    out: dict[str, set[str]] = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out[cells[0]] = set(re.findall(r"`([^`]+)`", cells[1]))
    return out


def test_each_code_is_defined_once() -> None:
    twice = [v for v, n in Counter(CODES.values()).items() if n > 1]
    assert not twice, f"codes defined under two names: {twice}"
    assert all(re.fullmatch("[a-z0-9_]+", v) for v in CODES.values())


def test_the_design_table_and_the_module_name_the_same_codes() -> None:
    documented = set().union(*design_table_codes().values())
    defined = set(CODES.values())
    assert not defined - documented, f"not in docs/design.md §4: {sorted(defined - documented)}"
    assert not documented - defined, f"not in contract/reasons.py: {sorted(documented - defined)}"


def test_the_consume_script_decides_only_known_verdicts() -> None:
    lua = (SRC / "lua" / "consume_permits.lua").read_text()
    for code in CONSUME_VERDICTS:
        assert f"'{code}'" in lua, code
    documented = design_table_codes()["executor, consume verdicts"]
    assert documented == set(CONSUME_VERDICTS)


def test_no_other_module_defines_a_reason_code() -> None:
    """A module-level ``NAME = "<a reason code>"`` outside contract/reasons.py is a second
    definition: import it from the contract instead."""
    values = set(CODES.values())
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "contract" / "reasons.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and node.value.value in values
                and any(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
            ):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    assert not found, f"reason codes defined outside contract/reasons.py: {found}"
