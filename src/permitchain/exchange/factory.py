"""Build the configured exchange adapter, refusing unsafe combinations at start.

Rules (each refusal is a ConfigError naming the variable to fix):

* ``EXCHANGE=binance-demo`` and ``EXCHANGE=binance`` need ``BINANCE_API_KEY`` and
  ``BINANCE_API_SECRET``.
* ``EXCHANGE=binance`` (live) with ``APPLY_MODE=testnet`` is refused: testnet behaviour
  (auto-approved permits) against real money makes no sense; use ``binance-demo``.
* ``EXCHANGE=binance`` with ``APPLY_MODE=production`` needs ``BINANCE_LIVE_CONFIRMED=true``.
* ``BINANCE_BASE_URL``, when set, must be an http(s) URL.

The keys are read from ``SecretStr`` here and handed to the adapter only; never logged.
"""

from __future__ import annotations

from permitchain.contract.errors import ConfigError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import ApplyMode, ExchangeKind, Settings
from permitchain.exchange.base import Exchange
from permitchain.exchange.sim import SimExchange
from permitchain.store import AsyncRedis


def check_exchange_settings(settings: Settings) -> None:
    """Refuse an exchange configuration that cannot be run safely."""
    kind = settings.exchange
    if kind is ExchangeKind.SIM:
        return
    missing = [
        name
        for name, value in (
            ("BINANCE_API_KEY", settings.binance_api_key),
            ("BINANCE_API_SECRET", settings.binance_api_secret),
        )
        if value is None or not value.get_secret_value().strip()
    ]
    if missing:
        raise ConfigError(f"{' and '.join(missing)}: required with EXCHANGE={kind.value}")
    if kind is ExchangeKind.BINANCE and settings.apply_mode is ApplyMode.TESTNET:
        raise ConfigError(
            "APPLY_MODE=testnet with EXCHANGE=binance (the live exchange) is refused: "
            "use EXCHANGE=binance-demo for testing, or APPLY_MODE=production"
        )
    if (
        kind is ExchangeKind.BINANCE
        and settings.apply_mode is ApplyMode.PRODUCTION
        and not settings.binance_live_confirmed
    ):
        raise ConfigError(
            "BINANCE_LIVE_CONFIRMED: must be true to trade live (EXCHANGE=binance, "
            "APPLY_MODE=production)"
        )
    url = settings.binance_base_url
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"BINANCE_BASE_URL: must start with http:// or https:// (got {url!r})")


def make_exchange(settings: Settings, redis: AsyncRedis, keys: Keys) -> Exchange:
    check_exchange_settings(settings)
    if settings.exchange is ExchangeKind.SIM:
        return SimExchange(redis, keys, settings.exec_record_ttl_s)
    # Imported here: importing ccxt takes a while, and the simulated exchange does not need it.
    from permitchain.exchange.binance import BinanceExchange  # noqa: PLC0415

    key, secret = settings.binance_api_key, settings.binance_api_secret
    if key is None or secret is None:  # refused above already; this narrows the types
        raise ConfigError("BINANCE_API_KEY and BINANCE_API_SECRET: required")
    return BinanceExchange(
        key.get_secret_value(),
        secret.get_secret_value(),
        demo=settings.exchange is ExchangeKind.BINANCE_DEMO,
        base_url=settings.binance_base_url,
    )
