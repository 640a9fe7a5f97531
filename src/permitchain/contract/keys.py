"""Every Redis key name of the contract, in one place (docs/design.md §2).

Per-plan keys carry the plan id as a Redis Cluster hash tag, ``{<plan_id>}``, so one Lua
script can touch all of a plan's keys. Scripts never build key names: callers pass them
in KEYS from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Consumer groups (docs/design.md §1).
GROUP_GOVERNOR = "governor"
GROUP_P33 = "p33"
GROUP_EXECUTOR = "executor"
GROUP_P33_LEDGER = "p33-ledger"
GROUP_GOVERNOR_RESULTS = "governor-results"

SERVICES = ("exit-brain", "apply-layer", "governor", "position-brain")


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (setting ``KEY_PREFIX``, default ``quantum``)."""

    prefix: str = "quantum"

    # -- proposals ----------------------------------------------------------------------
    def proposal(self, symbol: str) -> str:
        return f"{self.prefix}:harvest:proposal:{symbol}"

    @property
    def proposal_stream(self) -> str:
        return f"{self.prefix}:stream:harvest.proposal"

    # -- exit brain -----------------------------------------------------------------------
    def exit_state(self, symbol: str) -> str:
        """The exit brain's bookkeeping for the symbol's position (epoch, tranches proposed,
        stop, first seen). HASH, no TTL: it must outlive the position's plans."""
        return f"{self.prefix}:exit:state:{symbol}"

    # -- plans ----------------------------------------------------------------------------
    @property
    def plan_stream(self) -> str:
        return f"{self.prefix}:stream:apply.plan"

    def dedupe(self, plan_id: str) -> str:
        return f"{self.prefix}:apply:stream_published:{{{plan_id}}}"

    # -- permits --------------------------------------------------------------------------
    def permit_governor(self, plan_id: str) -> str:
        return f"{self.prefix}:permit:{{{plan_id}}}"

    def permit_p33(self, plan_id: str) -> str:
        return f"{self.prefix}:permit:p33:{{{plan_id}}}"

    @property
    def permit_event_stream(self) -> str:
        """Wake-up events: one entry per permit written (plan_id, layer). Not a source of truth."""
        return f"{self.prefix}:stream:permit.events"

    # -- execution ------------------------------------------------------------------------
    def exec_record(self, plan_id: str) -> str:
        return f"{self.prefix}:exec:{{{plan_id}}}"

    @property
    def result_stream(self) -> str:
        return f"{self.prefix}:stream:apply.result"

    # -- positions ------------------------------------------------------------------------
    def snapshot(self, symbol: str) -> str:
        return f"{self.prefix}:position:snapshot:{symbol}"

    @property
    def snapshot_pattern(self) -> str:
        return f"{self.prefix}:position:snapshot:*"

    def ledger(self, symbol: str) -> str:
        return f"{self.prefix}:position:ledger:{symbol}"

    def inflight(self, symbol: str) -> str:
        """P3.3's in-flight claim: set NX when it allows a close, expires after COOLDOWN_S."""
        return f"{self.prefix}:position:inflight:{symbol}"

    @property
    def ledger_pattern(self) -> str:
        return f"{self.prefix}:position:ledger:*"

    # -- governor rate store (one hash tag per symbol: the reserve script touches one slot) --
    def governor_executions(self, symbol: str) -> str:
        """ZSET plan_id → result ts of confirmed executions; trimmed past one hour."""
        return f"{self.prefix}:gov:{{{symbol}}}:executions"

    def governor_reservations(self, symbol: str) -> str:
        """ZSET plan_id → expiry of slots reserved by a grant, until its result (or expiry)."""
        return f"{self.prefix}:gov:{{{symbol}}}:reservations"

    def governor_notional(self, day: str) -> str:
        """HASH plan_id → notional of risk-increasing grants on one UTC day (YYYY-MM-DD)."""
        return f"{self.prefix}:gov:notional:{day}"

    # -- control and audit ----------------------------------------------------------------
    @property
    def trading_state(self) -> str:
        return f"{self.prefix}:trading_state"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}:stream:decisions"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}:stream:deadletter"

    def heartbeat(self, service: str) -> str:
        return f"{self.prefix}:svc:{service}:heartbeat"

    @property
    def canary_last(self) -> str:
        """The last ``proof --canary`` run: outcome and times (HASH, written by the CLI,
        exported by the apply layer's /metrics)."""
        return f"{self.prefix}:ops:canary:last"

    # -- simulated exchange ---------------------------------------------------------------
    # One hash tag per symbol, so a fill touches one slot.
    def stop_book(self, symbol: str) -> str:
        """The chain's own resting stop orders of a symbol (hash: client order id -> plan
        id, quantity, trigger, time; apply_layer.stops)."""
        return f"{self.prefix}:apply:stops:{{{symbol}}}"

    @property
    def reconcile(self) -> str:
        """The apply layer's reconciliation report (apply_layer.reconcile)."""
        return f"{self.prefix}:apply:reconcile"

    @property
    def stop_book_pattern(self) -> str:
        return f"{self.prefix}:apply:stops:*"

    def sim_position(self, symbol: str) -> str:
        return f"{self.prefix}:sim:{{{symbol}}}:position"

    def sim_filters(self, symbol: str) -> str:
        return f"{self.prefix}:sim:{{{symbol}}}:filters"

    def sim_order(self, symbol: str, client_order_id: str) -> str:
        return f"{self.prefix}:sim:{{{symbol}}}:order:{client_order_id}"

    def sim_order_seq(self, symbol: str) -> str:
        return f"{self.prefix}:sim:{{{symbol}}}:order_seq"

    def sim_stop(self, symbol: str) -> str:
        return f"{self.prefix}:sim:{{{symbol}}}:stop"

    @property
    def sim_symbols(self) -> str:
        return f"{self.prefix}:sim:symbols"

    @property
    def sim_fills(self) -> str:
        return f"{self.prefix}:sim:fills"

    @property
    def sim_events(self) -> str:
        """Positions of the simulated exchange changed from outside (pushed updates)."""
        return f"{self.prefix}:sim:events"

    @property
    def sim_config(self) -> str:
        return f"{self.prefix}:sim:config"
