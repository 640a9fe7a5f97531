"""Fixtures of the client's tests: the chain's services as separate processes (no exit
brain: the tests are the bot), a position on the simulated exchange, and a client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.store import async_client
from permitchain_client import Client

SYMBOL = "BTCUSDT"
POSITION = Decimal("0.062")
#: The chain's services the client talks to (the exit brain stays off: the test proposes).
GATEKEEPERS = ("apply-layer", "governor", "position-brain")
CHAIN_ENV = {
    "ALLOW_LIST_SYMBOLS": SYMBOL,
    "MAX_EXEC_PER_5MIN": "50",
    "MAX_EXEC_PER_HOUR": "50",
    "COOLDOWN_S": "5",
}


@dataclass
class Running:
    chain: Chain
    client: Client
    url: str

    @property
    def keys(self) -> Keys:
        return self.chain.keys

    def sim(self, fn: Callable[[SimExchange], object]) -> object:
        """Run ``fn(sim_exchange)`` (a coroutine function) on a fresh event loop."""

        async def body() -> object:
            r = async_client(self.url)
            try:
                return await fn(SimExchange(r, self.keys))  # type: ignore[misc]
            finally:
                await r.aclose()

        return asyncio.run(body())


def seed_position(url: str, keys: Keys, amt: Decimal = POSITION) -> None:
    async def body() -> None:
        r = async_client(url)
        try:
            sim = SimExchange(r, keys)
            await sim.list_symbol(SYMBOL, step_size="0.001", min_qty="0.001", min_notional="5")
            await sim.set_position(SYMBOL, amt, Decimal(100))
            await sim.set_price(SYMBOL, Decimal(107))
        finally:
            await r.aclose()

    asyncio.run(body())


def wait_ledger(r: redis.Redis, keys: Keys, amt: str, timeout_s: float = 15.0) -> str | None:
    """Block until P3.3's ledger reads ``amt`` (its snapshot poll follows the exchange)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = r.hget(keys.ledger(SYMBOL), "last_known_amt")
        if seen == amt:
            return seen
        time.sleep(0.05)
    return seen


@pytest.fixture
def start_chain(
    chain_factory: Callable[..., Chain], redis_url: str
) -> Iterator[Callable[..., Running]]:
    """Seed the position, start the gatekeepers and the apply layer, wait for P3.3's ledger;
    returns a client for the chain."""
    clients: list[Client] = []

    def start(service_urls: dict[str, str] | None = None, **env: str) -> Running:
        chain = chain_factory(**{**CHAIN_ENV, **env})
        if service_urls:  # each service as its own ACL user
            chain.service_env = {svc: {"REDIS_URL": url} for svc, url in service_urls.items()}
        seed_position(redis_url, chain.keys)
        chain.start(GATEKEEPERS)
        chain.wait_ready(GATEKEEPERS)
        client = Client.from_url(redis_url, key_prefix=chain.keys.prefix, source="test-bot")
        clients.append(client)
        r = client.redis
        assert wait_ledger(r, chain.keys, "0.062") == "0.062", "P3.3 never saw the position"
        return Running(chain, client, redis_url)

    yield start
    for c in clients:
        c.close()


ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only permitchain-client installed (pip resolves
    redis-py from its configured index or cache). Returns its python."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT / "clients" / "python")],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return python
