"""Fixtures for the Binance adapter tests: one fake Binance server for the session, reset
before every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakebinance import FakeBinance


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
