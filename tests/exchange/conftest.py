"""Fixtures for the Binance adapter tests: one fake Binance server for the session, reset
before every test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # fakebinance (tests/), binance_helpers (here)

from fakebinance import FakeBinance  # noqa: E402


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeBinance]:
    fake = FakeBinance()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_server: FakeBinance) -> FakeBinance:
    fake_server.reset()
    return fake_server
