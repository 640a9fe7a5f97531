"""Errors of the client, grouped by what the caller does. Denials are data (a
:class:`~permitchain_client.types.Claim` verdict, a ``Result`` status), never errors.

::

    PermitchainClientError
    ├── ContractError       bad input or an unreadable message: fix the call (nothing sent)
    ├── SchemaMismatch      the chain speaks a schema this client does not: upgrade one
    ├── ChainUnavailable    Redis unreachable, or no chain running there: retry later
    └── ResultTimeout       no result within the wait: look again (explain) later
"""

from __future__ import annotations


class PermitchainClientError(Exception):
    """Root of the client's errors."""


class ContractError(PermitchainClientError, ValueError):
    """A value the contract does not allow, or a message that does not parse."""


class SchemaMismatch(PermitchainClientError):
    """The chain declares a schema this client does not speak (both are named)."""


class ChainUnavailable(PermitchainClientError):
    """Redis could not be reached, or the chain's services are not running there."""


class ResultTimeout(PermitchainClientError, TimeoutError):
    """No result for the plan within the time given."""
