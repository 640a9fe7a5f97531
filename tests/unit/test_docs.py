"""The contract lives in the repository (docs/design.md) and the docs point only at what is
there: every relative link in README.md and docs/ resolves, and nothing sends a reader to a
design document outside the project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_contract_is_one_document_in_the_repository() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    headings = re.findall(r"^## \d+\. (.+)$", design, re.M)
    for topic in (
        "Redis keys",
        "Messages",
        "Reason codes",
        "Settings",
        "Commands",
        "The reference scenario",
        "The failures ruled out",
    ):
        assert topic in headings, topic
    assert not (ROOT / "docs" / "contract.md").exists()
    assert "](docs/design.md)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_point_only_at_what_the_project_has(doc: Path) -> None:
    text = doc.read_text()
    if doc.name != "CHANGELOG.md":  # the history may name what the contract replaced
        assert "DESIGN.md" not in text and "contract.md" not in text
        assert "shared design folder" not in text
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
