"""Build the configured exchange adapter."""

from __future__ import annotations

from permitchain.errors import ConfigError
from permitchain.exchange.base import Exchange
from permitchain.exchange.sim import SimExchange
from permitchain.keys import Keys
from permitchain.settings import ExchangeKind, Settings
from permitchain.store import AsyncRedis


def make_exchange(settings: Settings, redis: AsyncRedis, keys: Keys) -> Exchange:
    if settings.exchange is ExchangeKind.SIM:
        return SimExchange(redis, keys)
    raise ConfigError(f"EXCHANGE: {settings.exchange.value} adapter is not available in this build")
