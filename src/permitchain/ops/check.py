"""One check of ``permitchain proof``: passed, failed (with a reason naming the layer) or
skipped (not applicable, or not available in this build)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    layer: str
    ok: bool | None  # None: skipped (not applicable, or not available in this build)
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def passed(checks: list[Check]) -> bool:
    return all(c.ok is not False for c in checks)
