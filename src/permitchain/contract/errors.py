"""The exception tree, grouped by what the caller does.

A *denial* is not an exception: gatekeepers return decisions with reason codes. Exceptions
are faults::

    PermitchainError
    ├── ConfigError                  stop: fix the setting named in the message
    ├── ContractError                dead-letter: the input breaks the contract (docs/design.md §3)
    │   ├── SchemaError              unknown schema version
    │   └── WrongTypeError           a key holds another Redis type than the contract's
    ├── StoreError                   retry with backoff: Redis unreachable or failed
    └── ExchangeError                never blindly retry an order
        ├── OrderRejected            final: the exchange refused; nothing was placed
        ├── OrderOutcomeUnknown      resolve by client order id before anything else
        ├── RateLimited              back off (retry_after_s), then try again
        ├── ClockSkew                resync the clock, then try again
        └── ExchangeUnavailable      read failed (network, 5xx); data goes stale, deny on it

Library exceptions (redis, ccxt) are translated into these at one boundary each:
``permitchain.store`` for Redis, ``permitchain.exchange.binance`` for ccxt.
"""

from __future__ import annotations


class PermitchainError(Exception):
    """Root of every permitchain fault."""


class ConfigError(PermitchainError):
    """A setting is missing, unknown or malformed. The message names the variable."""


class ContractError(PermitchainError):
    """A message or key does not match the contract; it goes to the dead-letter stream."""


class SchemaError(ContractError):
    """A message carries a schema version this build does not understand."""


class WrongTypeError(ContractError):
    """A key holds another Redis type than the contract says (``WRONGTYPE``): a named
    reason (``wrong_key_type``), never retried: it does not heal by itself. Raised where
    the reply is read (``permitchain.store.wrong_type``), naming the key and both types."""

    def __init__(self, key: str, actual: str, expected: str) -> None:
        super().__init__(f"key {key} is a {actual}, expected a {expected}")
        self.key, self.actual, self.expected = key, actual, expected


class StoreError(PermitchainError):
    """Redis failed or is unreachable. Retry with backoff; decide nothing meanwhile."""


class ExchangeError(PermitchainError):
    """Base of exchange faults. ``code`` is the exchange's own error code when known."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class OrderRejected(ExchangeError):
    """Final: the exchange refused the order and nothing was placed."""


class StopWouldTrigger(OrderRejected):
    """A stop refused because the mark is already past its trigger (Binance -2021, -4142):
    nothing was placed, and the stop's condition is met now."""


class OrderOutcomeUnknown(ExchangeError):
    """The order may or may not exist: look it up by client order id, never re-send."""


class RateLimited(ExchangeError):
    """The exchange asked us to slow down."""

    def __init__(
        self, message: str, *, code: int | None = None, retry_after_s: float = 1.0
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class ClockSkew(ExchangeError):
    """Our timestamp is outside the exchange's receive window: resync, then retry."""


class ExchangeUnavailable(ExchangeError):
    """A read failed (network, 5xx, maintenance). Callers keep old data and let it go stale."""
