"""permitchain-client: talk to a running permitchain chain from any Python program.

Depends on redis-py only (no ccxt, no server, no pydantic), so it installs beside a bot
that pins its own libraries. Sync (:class:`Client`) and asyncio (:class:`AsyncClient`):

- ``propose(symbol, action, kill_score=…, tranche=…) -> plan_id``
- ``wait_result(plan_id, timeout) -> Result``
- ``explain(plan_id) -> Explanation`` and ``trading_state() -> TradingState``
- ``client.gate.claim(plan_id)`` / ``client.gate.report(plan_id, status, filled_qty, …)``:
  the gate for a bot that places its own orders (``propose(…, executor="external")``).

The client speaks the contract schemas in :data:`SCHEMAS` and refuses a chain that declares
another (its services' heartbeats carry ``schema``). See docs/integrations.md.
"""

from permitchain_client.aio import AsyncClient, AsyncGate
from permitchain_client.contract import CLIENT_VERSION, SCHEMA, SCHEMAS, Keys
from permitchain_client.errors import (
    ChainUnavailable,
    ContractError,
    PermitchainClientError,
    ResultTimeout,
    SchemaMismatch,
)
from permitchain_client.sync import Client, Gate
from permitchain_client.types import (
    AuditEntry,
    Claim,
    ClaimVerdict,
    Explanation,
    Report,
    Result,
    TradingState,
)

__version__ = CLIENT_VERSION

__all__ = [
    "SCHEMA",
    "SCHEMAS",
    "AsyncClient",
    "AsyncGate",
    "AuditEntry",
    "ChainUnavailable",
    "Claim",
    "ClaimVerdict",
    "Client",
    "ContractError",
    "Explanation",
    "Gate",
    "Keys",
    "PermitchainClientError",
    "Report",
    "Result",
    "ResultTimeout",
    "SchemaMismatch",
    "TradingState",
    "__version__",
]
