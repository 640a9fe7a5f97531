"""Operator actions shared by the CLI and the console: a hand-made proposal and a reconcile.

Each is one function both front ends call, so a proposal from the console meets exactly the
checks of ``permitchain propose`` and a reconcile is previewed and audited exactly as
``permitchain reconcile`` does it. Trading-state changes live in ``cli/control.py``
(``set_trading_state``), called by both as well.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from permitchain.contract.errors import ContractError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal
from permitchain.contract.settings import Settings
from permitchain.exchange.factory import make_exchange
from permitchain.exit_brain.api import (
    build_proposal,
    current_epoch,
    expected_plan_id,
    submit_proposal,
)
from permitchain.position_brain.state import reconcile as reconcile_ledger
from permitchain.store import AsyncRedis

__all__ = ["InFlight", "UnknownSymbol", "expected_plan_id", "operator_proposal", "reconcile_symbol"]


class UnknownSymbol(ContractError):
    """The exchange reports no such symbol."""


class InFlight(ContractError):
    """A reconcile was refused: a close P3.3 allowed is in flight for the symbol."""

    def __init__(self, message: str, preview: dict[str, Any]) -> None:
        super().__init__(message)
        self.preview = preview


async def operator_proposal(
    r: AsyncRedis,
    k: Keys,
    s: Settings,
    *,
    symbol: str,
    action: str,
    kill_score: str = "0.6",
    new_sl: str | None = None,
    r_net: str | None = None,
    tranche: int = 0,
    epoch: int | None = None,
    source: str = "cli",
) -> tuple[Proposal, str]:
    """Validate and submit a proposal as ``permitchain propose`` does (raises
    ``ContractError`` naming the field: ``exit_brain.api.build_proposal``, the planner's own
    rule); returns it and its stream entry id."""
    draft = build_proposal(
        symbol,
        action,
        kill_score=kill_score,
        new_sl=new_sl,
        r_net=r_net,
        position_epoch=epoch or 0,
        tranche=tranche,
        source=source,
    )
    ep = epoch if epoch is not None else await current_epoch(r, k, symbol)
    p = draft.model_copy(update={"position_epoch": ep})
    return p, await submit_proposal(r, k, p, ttl_s=s.proposal_ttl_s)


async def reconcile_symbol(
    r: AsyncRedis,
    k: Keys,
    s: Settings,
    symbol: str,
    *,
    operator: str,
    reason: str,
    dry_run: bool,
    force: bool = False,
) -> dict[str, Any]:
    """Set P3.3's ledger to the exchange's position (audited, new epoch), or only preview it.

    Refused (``InFlight``, nothing changed) while a close P3.3 allowed is in flight, unless
    ``force``; ``UnknownSymbol`` when the exchange knows no such symbol."""
    ex = make_exchange(s, r, k)
    try:
        known = await ex.filters([symbol])
        positions = await ex.fetch_positions([symbol])
    finally:
        await ex.close()
    if symbol not in known and symbol not in positions:
        raise UnknownSymbol(f"{symbol}: the exchange reports no such symbol")
    amt = positions[symbol].amt if symbol in positions else Decimal(0)
    preview = await reconcile_ledger(
        r, k, symbol, amt, operator=operator, note=reason, dry_run=True
    )
    if dry_run:
        return preview
    if preview["in_flight_plan"] and not force:
        raise InFlight(
            f"plan {preview['in_flight_plan']} is in flight for {symbol}: its fill may not be on "
            "the exchange or the ledger yet; nothing changed. Wait for its result (COOLDOWN_S) "
            "or force it",
            preview,
        )
    return await reconcile_ledger(r, k, symbol, amt, operator=operator, note=reason)
