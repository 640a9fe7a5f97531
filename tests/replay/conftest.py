"""The recorded candles of the shared folder, beside the clone (``../shared/data/klines``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

KLINES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "klines"


@pytest.fixture(scope="session")
def klines() -> Path:
    """The folder; skipped when absent outside CI, a failure when absent in CI."""
    if not KLINES.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"recorded candles missing: {KLINES} (the shared folder beside the clone)")
        pytest.skip(f"recorded candles not found at {KLINES} (the shared folder beside the clone)")
    return KLINES.resolve()
