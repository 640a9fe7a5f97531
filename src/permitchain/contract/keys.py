"""Every Redis key name of the contract, in one place (docs/design.md §2).

Per-plan keys carry the plan id as a Redis Cluster hash tag, ``{<plan_id>}``, so one Lua
script can touch all of a plan's keys. Scripts never build key names: callers pass them
in KEYS from here.

Sharded streams (setting ``STREAM_SHARDS``, docs/design.md §2): the plan, permit-event and
result streams are each split into N streams by symbol. A symbol's shard is
``crc32(symbol) % N`` (:func:`shard_of`), so all of a symbol's entries are in one stream, in
order. At N = 1 the names are the unsharded ones (``{prefix}:stream:apply.plan``). For N > 1
shard i's names end in ``:{<tag>}``, a hash tag whose Redis Cluster slot lies in the i-th of
N equal slot ranges (:func:`shard_tag`): on an evenly split cluster the shards sit on
different masters, and a shard's plan, permit-event and result streams share one slot.
"""

from __future__ import annotations

import binascii
import functools
from dataclasses import dataclass

# Consumer groups (docs/design.md §1).
GROUP_GOVERNOR = "governor"
GROUP_P33 = "p33"
GROUP_EXECUTOR = "executor"
GROUP_P33_LEDGER = "p33-ledger"
GROUP_GOVERNOR_RESULTS = "governor-results"

SERVICES = ("exit-brain", "apply-layer", "governor", "position-brain")

#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: The largest STREAM_SHARDS (each shard needs its own slot range; far more masters than any
#: deployment runs).
MAX_SHARDS = 256


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum Redis Cluster
    maps keys to slots with; ``binascii.crc_hqx`` computes exactly it."""
    return binascii.crc_hqx(data, 0)


def key_slot(key: str) -> int:
    """The Redis Cluster slot of ``key`` (as ``CLUSTER KEYSLOT``): the CRC16 of its hash
    tag (the text between the first ``{`` and the next ``}``, when not empty), else of the
    whole key, modulo 16384."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % SLOTS


def shard_of(symbol: str, shards: int) -> int:
    """A symbol's shard among ``shards``: ``crc32(symbol) % shards`` (stable across
    processes, hosts and versions; 0 when there is one shard)."""
    return binascii.crc32(symbol.encode()) % shards if shards > 1 else 0


@functools.cache
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of shard ``shard`` of ``shards``: the first of ``s<shard>.0``,
    ``s<shard>.1``, … whose slot lies in ``[shard·16384/shards, (shard+1)·16384/shards)``."""
    if not 0 <= shard < shards <= MAX_SHARDS:
        raise ValueError(f"shard {shard} of {shards}: out of range")
    low, high = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
    n = 0
    while True:
        tag = f"s{shard}.{n}"
        if low <= crc16(tag.encode()) % SLOTS < high:
            return tag
        n += 1


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (setting ``KEY_PREFIX``, default ``quantum``), with the
    plan, permit-event and result streams split into ``shards`` (``STREAM_SHARDS``)."""

    prefix: str = "quantum"
    shards: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.shards, bool) or not isinstance(self.shards, int):
            raise TypeError(f"shards: an int, got {self.shards!r}")
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards: 1 to {MAX_SHARDS}, got {self.shards}")

    # -- sharded streams ------------------------------------------------------------------
    def shard_of(self, symbol: str) -> int:
        """The shard of ``symbol``'s plans, permit events and results (:func:`shard_of`)."""
        return shard_of(symbol, self.shards)

    def _shard(self, base: str, shard: int) -> str:
        if self.shards == 1:
            if shard != 0:
                raise ValueError(f"shard {shard} of 1")
            return base
        return f"{base}:{{{shard_tag(shard, self.shards)}}}"

    def _single(self, base: str, what: str) -> str:
        """An unsharded stream name: only meaningful with one shard (a caller that needs a
        symbol's stream with more is a bug, refused loudly)."""
        if self.shards != 1:
            raise ValueError(f"{what}: {self.shards} shards; use {what}_for(symbol)")
        return base

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
    def _plan_base(self) -> str:
        return f"{self.prefix}:stream:apply.plan"

    @property
    def plan_stream(self) -> str:
        """The plan stream with one shard (refused with several: see plan_stream_for)."""
        return self._single(self._plan_base, "plan_stream")

    def plan_stream_for(self, symbol: str) -> str:
        return self._shard(self._plan_base, self.shard_of(symbol))

    def plan_stream_shard(self, shard: int) -> str:
        return self._shard(self._plan_base, shard)

    @property
    def plan_streams(self) -> tuple[str, ...]:
        """All plan streams, shard 0 first."""
        return tuple(self.plan_stream_shard(i) for i in range(self.shards))

    def dedupe(self, plan_id: str) -> str:
        return f"{self.prefix}:apply:stream_published:{{{plan_id}}}"

    # -- permits --------------------------------------------------------------------------
    def permit_governor(self, plan_id: str) -> str:
        return f"{self.prefix}:permit:{{{plan_id}}}"

    def permit_p33(self, plan_id: str) -> str:
        return f"{self.prefix}:permit:p33:{{{plan_id}}}"

    @property
    def _permit_event_base(self) -> str:
        return f"{self.prefix}:stream:permit.events"

    @property
    def permit_event_stream(self) -> str:
        """Wake-up events: one entry per permit written (plan_id, layer). Not a source of
        truth. With one shard (see permit_event_stream_for)."""
        return self._single(self._permit_event_base, "permit_event_stream")

    def permit_event_stream_for(self, symbol: str) -> str:
        return self._shard(self._permit_event_base, self.shard_of(symbol))

    def permit_event_stream_shard(self, shard: int) -> str:
        return self._shard(self._permit_event_base, shard)

    @property
    def permit_event_streams(self) -> tuple[str, ...]:
        return tuple(self.permit_event_stream_shard(i) for i in range(self.shards))

    # -- execution ------------------------------------------------------------------------
    def exec_record(self, plan_id: str) -> str:
        return f"{self.prefix}:exec:{{{plan_id}}}"

    @property
    def _result_base(self) -> str:
        return f"{self.prefix}:stream:apply.result"

    @property
    def result_stream(self) -> str:
        """The result stream with one shard (see result_stream_for)."""
        return self._single(self._result_base, "result_stream")

    def result_stream_for(self, symbol: str) -> str:
        return self._shard(self._result_base, self.shard_of(symbol))

    def result_stream_shard(self, shard: int) -> str:
        return self._shard(self._result_base, shard)

    @property
    def result_streams(self) -> tuple[str, ...]:
        return tuple(self.result_stream_shard(i) for i in range(self.shards))

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
