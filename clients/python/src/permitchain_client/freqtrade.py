"""Freqtrade adapter: every exit of a Freqtrade strategy goes through permitchain's gate.

Mix :class:`PermitchainExitMixin` in before ``IStrategy``::

    class MyStrategy(PermitchainExitMixin, IStrategy):
        position_adjustment_enable = True        # partial exits (permitchain_exit)
        permitchain_url = "redis://127.0.0.1:6379/0"

        def permitchain_exit(self, trade, current_time, current_rate, current_profit):
            if current_profit > 0.05:
                return ExitIntent("PARTIAL_50", kill_score="0.7")
            return None

What it does, per exit:

- **Freqtrade's own exits** (exit signals, ROI, stop loss, ``custom_exit``) reach
  ``confirm_trade_exit``: the mixin proposes ``FULL_CLOSE_PROPOSED`` with
  ``executor="external"`` (kill score: :meth:`permitchain_kill_score`), waits for the chain's
  verdict and claims the grant. The exit is allowed only when the grant's quantity is the
  amount Freqtrade is about to sell; otherwise it is refused (and a claimed grant reported
  ``rejected``: nothing was sent), with the reason logged.
- **Partial exits**: :meth:`permitchain_exit` returns an :class:`ExitIntent`; the mixin's
  ``adjust_trade_position`` proposes it, claims, and asks Freqtrade to sell exactly the
  grant's quantity, tagged with the grant's client order id (the order's ``ft_order_tag``).
- ``order_filled`` reports each gated exit order (filled quantity, price, order id): the
  plan's one result, so permitchain's P3.3 ledger follows.

Fail-closed: any error on the way (Redis unreachable, a schema the client does not speak)
refuses the exit. A strategy that defines ``confirm_trade_exit``, ``adjust_trade_position``
or ``order_filled`` itself must call ``super()``. Limits: Freqtrade does not let a strategy
set the exchange's client order id, so on a live exchange the gate's id is only the order's
tag; an exit whose bot dies before its report is then not found by that id, and the
resolver ends it ``unknown`` (P3.3 stops the symbol until reconciled: fail-closed).
Freqtrade and this module share no dependency: it uses the sync
:class:`~permitchain_client.Client` only.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from permitchain_client.sync import Client
from permitchain_client.types import Claim

log = logging.getLogger("permitchain_client.freqtrade")


class TradeLike(Protocol):
    """What the mixin reads of Freqtrade's ``Trade``."""

    id: int
    pair: str
    amount: float
    stake_amount: float
    exit_side: str


class OrderLike(Protocol):
    """What the mixin reads of Freqtrade's ``Order``."""

    ft_order_side: str
    ft_order_tag: str | None
    order_id: str | None

    @property
    def safe_filled(self) -> float: ...

    @property
    def safe_price(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ExitIntent:
    """A partial exit the strategy wants: one of the chain's closing actions and its score."""

    action: str  # PARTIAL_25, PARTIAL_50, PARTIAL_75 or FULL_CLOSE_PROPOSED
    kill_score: str = "1"


@dataclass(frozen=True, slots=True)
class GateExit:
    """An exit the gate allowed and the mixin waits to see filled."""

    plan_id: str
    trade_id: int
    qty: Decimal
    client_order_id: str


def qty(value: float) -> Decimal:
    """A Freqtrade amount (float) as the decimal it prints as."""
    return Decimal(repr(float(value)))


class PermitchainExitMixin:
    """Routes a Freqtrade strategy's exits through permitchain's gate (module docstring)."""

    #: where the chain is (``config["permitchain"]`` overrides: url, key_prefix, wait_s)
    permitchain_url: str = "redis://127.0.0.1:6379/0"
    permitchain_key_prefix: str = "quantum"
    permitchain_wait_s: float = 10.0
    permitchain_source: str = "freqtrade"

    config: dict[str, Any]

    # -- for the strategy to override -------------------------------------------------------
    def permitchain_symbol(self, pair: str) -> str:
        """The chain's symbol of a Freqtrade pair: ``BTC/USDT:USDT`` → ``BTCUSDT``."""
        return pair.split(":", maxsplit=1)[0].replace("/", "").upper()

    def permitchain_exit(
        self, trade: Any, current_time: datetime, current_rate: float, current_profit: float
    ) -> ExitIntent | None:
        """A partial exit to ask the gate for now, or None (the default: none)."""
        return None

    def permitchain_kill_score(
        self, pair: str, trade: Any, exit_reason: str, rate: float, current_time: datetime
    ) -> str:
        """The kill score of Freqtrade's own exits (the default: 1, certain)."""
        return "1"

    # -- state -----------------------------------------------------------------------------
    def _pc(self) -> Client:
        client: Client | None = getattr(self, "_pc_client", None)
        if client is None:
            cfg = (getattr(self, "config", None) or {}).get("permitchain", {})
            client = Client.from_url(
                cfg.get("url", self.permitchain_url),
                key_prefix=cfg.get("key_prefix", self.permitchain_key_prefix),
                source=self.permitchain_source,
            )
            self._pc_client = client
            self._pc_wait_s = float(cfg.get("wait_s", self.permitchain_wait_s))
            # tranches: unique per proposal, so a retried exit is a new plan
            self._pc_tranche = itertools.count(int(time.time() * 1000) % 10**11)
            self._pc_by_tag: dict[str, GateExit] = {}
            self._pc_by_trade: dict[int, GateExit] = {}
            self.permitchain_log: list[dict[str, str]] = []
        return client

    def _pc_note(self, **event: str) -> None:
        self.permitchain_log.append(event)

    def _pc_gate(self, trade: TradeLike, action: str, kill_score: str) -> Claim | None:
        """Propose, wait for the verdict, claim. Returns the claim when it is ``ok``."""
        client = self._pc()
        symbol = self.permitchain_symbol(trade.pair)
        plan_id = client.propose(
            symbol,
            action,
            kill_score=kill_score,
            tranche=next(self._pc_tranche),
            executor="external",
        )
        claim = client.gate.claim(plan_id, timeout=self._pc_wait_s)
        if not claim.ok:
            log.warning(
                "[GATE] exit refused pair=%s plan=%s verdict=%s reason=%s",
                trade.pair,
                plan_id,
                claim.verdict.value,
                claim.reason,
            )
            self._pc_note(
                event="refused",
                pair=trade.pair,
                plan_id=plan_id,
                action=action,
                verdict=claim.verdict.value,
                reason=claim.reason,
            )
            return None
        return claim

    # -- Freqtrade callbacks ----------------------------------------------------------------
    def adjust_trade_position(
        self,
        trade: Any,
        current_time: datetime,
        current_rate: float,
        current_profit: float,
        min_stake: float | None,
        max_stake: float,
        current_entry_rate: float,
        current_exit_rate: float,
        current_entry_profit: float,
        current_exit_profit: float,
        **kwargs: Any,
    ) -> tuple[float, str] | None:
        intent = self.permitchain_exit(trade, current_time, current_rate, current_profit)
        if intent is None:
            return None
        claim = self._pc_gate(trade, intent.action, intent.kill_score)
        if claim is None or claim.qty is None:
            return None
        amount = qty(trade.amount)
        if claim.qty > amount:  # never more than Freqtrade holds
            self._pc_refuse(claim, trade, "gate quantity above the trade's amount")
            return None
        gated = GateExit(claim.plan_id, trade.id, claim.qty, claim.client_order_id)
        self._pc_by_tag[claim.client_order_id] = gated
        self._pc_note(
            event="allowed",
            pair=trade.pair,
            plan_id=claim.plan_id,
            action=intent.action,
            qty=str(claim.qty),
            tag=claim.client_order_id,
        )
        # Freqtrade sells stake × amount / stake_amount, truncated to its amount step: ask for
        # the grant's quantity plus half a step, so the truncation lands on it exactly.
        step = Decimal(repr(getattr(trade, "amount_precision", None) or 0))
        want = claim.qty + (step / 2 if step > 0 else 0)
        stake = -(want * qty(trade.stake_amount) / amount)
        return float(stake), claim.client_order_id

    def confirm_trade_exit(
        self,
        pair: str,
        trade: Any,
        order_type: str,
        amount: float,
        rate: float,
        time_in_force: str,
        exit_reason: str,
        current_time: datetime,
        **kwargs: Any,
    ) -> bool:
        try:
            return self._pc_confirm(pair, trade, amount, rate, exit_reason, current_time)
        except Exception as e:
            # Freqtrade turns an error raised here into "allow the exit": refuse instead.
            log.error("[GATE] exit refused pair=%s: %s: %s", pair, type(e).__name__, e)
            return False

    def _pc_confirm(
        self,
        pair: str,
        trade: Any,
        amount: float,
        rate: float,
        exit_reason: str,
        current_time: datetime,
    ) -> bool:
        self._pc()
        gated = self._pc_by_tag.get(exit_reason)  # a partial exit this mixin asked for
        if gated is not None:
            return qty(amount) == gated.qty
        score = self.permitchain_kill_score(pair, trade, exit_reason, rate, current_time)
        claim = self._pc_gate(trade, "FULL_CLOSE_PROPOSED", score)
        if claim is None or claim.qty is None:
            return False
        if claim.qty != qty(amount):
            self._pc_refuse(
                claim, trade, f"gate quantity {claim.qty} is not the exit's {qty(amount)}"
            )
            return False
        self._pc_by_trade[trade.id] = GateExit(
            claim.plan_id, trade.id, claim.qty, claim.client_order_id
        )
        self._pc_note(
            event="allowed",
            pair=pair,
            plan_id=claim.plan_id,
            action="FULL_CLOSE_PROPOSED",
            qty=str(claim.qty),
            tag=claim.client_order_id,
        )
        return True

    def order_filled(
        self, pair: str, trade: Any, order: Any, current_time: datetime, **kwargs: Any
    ) -> None:
        self._pc()
        if order.ft_order_side != trade.exit_side:
            return
        gated = self._pc_by_tag.pop(order.ft_order_tag or "", None)
        if gated is None:
            gated = self._pc_by_trade.pop(trade.id, None)
        if gated is None:
            log.error(
                "[GATE] exit order %s of %s filled without a gate claim", order.order_id, pair
            )
            return
        # Freqtrade's float amount, back to the grant's decimal places (float noise removed)
        places = Decimal(1).scaleb(min(0, int(gated.qty.as_tuple().exponent)))
        filled = min(qty(order.safe_filled).quantize(places, rounding=ROUND_HALF_EVEN), gated.qty)
        status = "filled" if filled == gated.qty else "partially_filled"
        report = self._pc().gate.report(
            gated.plan_id,
            status,
            filled,
            avg_price=qty(order.safe_price),
            order_id=str(order.order_id or ""),
        )
        self._pc_note(
            event="reported",
            pair=pair,
            plan_id=gated.plan_id,
            qty=str(filled),
            accepted=str(report.accepted),
            reason=report.reason,
        )

    def _pc_refuse(self, claim: Claim, trade: TradeLike, why: str) -> None:
        """A claimed grant the exit cannot use: report it rejected (nothing was sent)."""
        log.warning("[GATE] exit refused pair=%s plan=%s: %s", trade.pair, claim.plan_id, why)
        self._pc().gate.report(claim.plan_id, "rejected", "0")
        self._pc_note(
            event="refused",
            pair=trade.pair,
            plan_id=claim.plan_id,
            verdict="qty_mismatch",
            reason=why,
        )
