"""NautilusTrader adapter: an ``ExecAlgorithm`` that holds reduce-only orders until
permitchain's gate approves them, and sends them with the gate's quantity.

A strategy routes an exit through it by naming it on the order, with the chain's action and
kill score as tags::

    order = self.order_factory.market(
        instrument_id, OrderSide.SELL, quantity, reduce_only=True,
        exec_algorithm_id=ExecAlgorithmId("PCGATE"),
        tags=["pc:action=PARTIAL_50", "pc:kill_score=0.8"],
    )
    self.submit_order(order)

and adds the algorithm to its node or backtest engine
(``PermitchainGate(PermitchainGateConfig(url=…, key_prefix=…))``).

Per primary order: not reduce-only → refused; otherwise propose (``executor="external"``),
wait for the chain's verdict and claim the grant. Refused (a skip, a deny, the kill switch):
nothing is sent and the primary order is never submitted. Allowed: one reduce-only market
order is spawned with the grant's quantity (whatever the primary asked for) and the tags
``pc:plan=<plan id>`` and ``pc:client_order_id=<the gate's client order id>``, and
submitted; when it is filled (or rejected) the algorithm reports the outcome to the gate,
which becomes the plan's one result. Nautilus assigns the spawned order's own client order
id (``<primary>-E1``); the gate's id travels in its tags.

The gate's calls block (a claim waits up to ``wait_s``): fine in a backtest, where time is
simulated; a live node should keep ``wait_s`` short.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from decimal import Decimal

from nautilus_trader.config import ExecAlgorithmConfig
from nautilus_trader.execution.algorithm import ExecAlgorithm
from nautilus_trader.model.events import OrderFilled, OrderRejected
from nautilus_trader.model.identifiers import ExecAlgorithmId
from nautilus_trader.model.orders import Order

from permitchain_client.errors import PermitchainClientError
from permitchain_client.sync import Client
from permitchain_client.types import Claim

log = logging.getLogger("permitchain_client.nautilus")
TAG = "pc:"


class PermitchainGateConfig(ExecAlgorithmConfig, frozen=True):  # type: ignore[call-arg]
    """Where the chain is; ``symbols`` maps an instrument's symbol to the chain's (default:
    the instrument's symbol without ``-PERP`` and punctuation: ``ETHBTC-PERP`` → ``ETHBTC``)."""

    exec_algorithm_id: ExecAlgorithmId | None = ExecAlgorithmId("PCGATE")
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "quantum"
    wait_s: float = 10.0
    source: str = "nautilus"
    symbols: dict[str, str] | None = None


def tags_of(order: Order) -> dict[str, str]:
    """An order's ``pc:key=value`` tags."""
    out = {}
    for tag in order.tags or []:
        if tag.startswith(TAG) and "=" in tag:
            key, _, value = tag[len(TAG) :].partition("=")
            out[key] = value
    return out


class PermitchainGate(ExecAlgorithm):
    """Holds reduce-only orders until the gate approves them (module docstring)."""

    def __init__(self, config: PermitchainGateConfig | None = None) -> None:
        config = config or PermitchainGateConfig()
        super().__init__(config)
        self.gate_config = config
        self.client = Client.from_url(
            config.url, key_prefix=config.key_prefix, source=config.source
        )
        #: spawned order's client order id → the claim it carries
        self.claims: dict[str, Claim] = {}
        #: what the algorithm decided, in order (for the strategy's logs and tests)
        self.decisions: list[dict[str, str]] = []
        # tranches: unique per proposal, so a retried exit is a new plan
        self.tranches = itertools.count(int(time.time() * 1000) % 10**11)

    def chain_symbol(self, order: Order) -> str:
        symbol = order.instrument_id.symbol.value
        mapped = (self.gate_config.symbols or {}).get(symbol)
        return mapped or re.sub(r"[^A-Z0-9]", "", symbol.upper().removesuffix("-PERP"))

    def on_order(self, order: Order) -> None:
        try:
            self._gate(order)
        except PermitchainClientError as e:  # fail closed: the order is held, never sent
            self._refuse(order, "", f"{type(e).__name__}: {e}")

    def _gate(self, order: Order) -> None:
        tags = tags_of(order)
        if not order.is_reduce_only:
            self._refuse(order, "", "not_reduce_only")
            return
        action = tags.get("action", "FULL_CLOSE_PROPOSED")
        plan_id = self.client.propose(
            self.chain_symbol(order),
            action,
            kill_score=tags.get("kill_score", "1"),
            tranche=int(tags.get("tranche") or next(self.tranches)),
            executor="external",
        )
        claim = self.client.gate.claim(plan_id, timeout=self.gate_config.wait_s)
        if not claim.ok or claim.qty is None:
            self._refuse(order, plan_id, f"{claim.verdict.value}:{claim.reason}")
            return
        instrument = self.cache.instrument(order.instrument_id)
        qty = instrument.make_qty(claim.qty)
        if qty.as_decimal() != claim.qty:
            self.client.gate.report(plan_id, "rejected", "0")
            self._refuse(order, plan_id, "gate quantity not on the instrument's size step")
            return
        spawned = self.spawn_market(
            order,
            quantity=qty,
            reduce_only=True,
            reduce_primary=False,
            tags=[f"{TAG}plan={plan_id}", f"{TAG}client_order_id={claim.client_order_id}"],
        )
        self.claims[spawned.client_order_id.value] = claim
        self.decisions.append(
            {
                "event": "allowed",
                "primary": order.client_order_id.value,
                "plan_id": plan_id,
                "qty": str(claim.qty),
                "asked": str(order.quantity),
                "client_order_id": claim.client_order_id,
                "spawned": spawned.client_order_id.value,
            }
        )
        log.info(
            "[GATE] send plan=%s qty=%s (asked %s) spawned=%s",
            plan_id,
            claim.qty,
            order.quantity,
            spawned.client_order_id,
        )
        self.submit_order(spawned)

    def on_order_filled(self, event: OrderFilled) -> None:
        claim = self.claims.get(event.client_order_id.value)
        order = self.cache.order(event.client_order_id)
        if claim is None or order is None or not order.is_closed:
            return
        del self.claims[event.client_order_id.value]
        self.on_gate_fill(order, claim)
        filled = order.filled_qty.as_decimal()
        report = self.client.gate.report(
            claim.plan_id,
            "filled" if filled == claim.qty else "partially_filled",
            filled,
            avg_price=Decimal(str(order.avg_px)) if order.avg_px else None,
            order_id=str(order.venue_order_id or ""),
        )
        self.decisions.append(
            {
                "event": "reported",
                "plan_id": claim.plan_id,
                "qty": str(filled),
                "accepted": str(report.accepted),
            }
        )

    def on_order_rejected(self, event: OrderRejected) -> None:
        claim = self.claims.pop(event.client_order_id.value, None)
        if claim is not None:
            self.client.gate.report(claim.plan_id, "rejected", "0")
            self.decisions.append(
                {"event": "reported", "plan_id": claim.plan_id, "qty": "0", "accepted": "rejected"}
            )

    def on_gate_fill(self, order: Order, claim: Claim) -> None:
        """Called when a gated order is filled, before its report (for subclasses)."""

    def on_stop(self) -> None:
        self.client.close()

    def _refuse(self, order: Order, plan_id: str, reason: str) -> None:
        self.decisions.append(
            {
                "event": "refused",
                "primary": order.client_order_id.value,
                "plan_id": plan_id,
                "reason": reason,
            }
        )
        log.warning("[GATE] held order %s never sent: %s", order.client_order_id, reason)
