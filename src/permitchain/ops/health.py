"""The health box behind ``permitchain status``: read-only, from Redis alone.

What makes the chain unhealthy (each one a *problem*, naming the layer; ``status`` exits 1):
a service without a fresh heartbeat, a consumer group missing, lagging or holding entries
pending for long, a stale exchange snapshot, exchange and ledger disagreeing beyond P3.3's
tolerance (check 4, the same rule: ``position_brain.checks.tolerance``), recent dead letters,
a key holding another Redis type than the contract's (``key K is a string, expected a hash``:
reported as a problem, never a failed command; the rest of the box is still gathered);
the exchange's position mode changed while running, open orders with the chain's client-order
-id prefix that the chain does not know (both from the apply layer's reconciliation report,
``apply_layer.reconcile``).
*Warnings* are shown but do not fail: trading HALTED or REDUCING (an operator's choice), an
allowlisted symbol without a snapshot.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import redis.exceptions

from permitchain.apply_layer.planner_service import GROUP_PLANNER
from permitchain.contract.keys import (
    GROUP_EXECUTOR,
    GROUP_GOVERNOR,
    GROUP_P33,
    GROUP_P33_LEDGER,
    SERVICES,
    Keys,
)
from permitchain.contract.models import CANARY_SYMBOL, fmt_decimal
from permitchain.contract.reasons import QTY_MISMATCH, SIDE_MISMATCH
from permitchain.contract.settings import Settings
from permitchain.contract.snapshot import parse_ledger, parse_snapshot
from permitchain.contract.trading_state import TradingState, read_trading_state
from permitchain.ops import reads as rd
from permitchain.ops.history import audit_entry
from permitchain.position_brain.checks import CheckConfig, side_of, tolerance
from permitchain.position_brain.state import LEDGER_CHECK_FIELDS, ledger_fields
from permitchain.store import AsyncRedis, is_wrong_type, wrong_type

#: The reserved symbol of ``permitchain proof --canary`` (never traded; see ops/proof.py).
#: A pending entry idle this long is stuck (live members reclaim after a few seconds).
PENDING_STUCK_S = 30.0
DEFAULT_MAX_LAG = 100
DEADLETTER_WINDOW_S = 3600.0
RECENT_DECISIONS = 10

#: (stream attribute of Keys, group, owning service)
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("proposal_stream", GROUP_PLANNER, "apply-layer"),
    ("plan_stream", GROUP_GOVERNOR, "governor"),
    ("plan_stream", GROUP_P33, "position-brain"),
    ("plan_stream", GROUP_EXECUTOR, "apply-layer"),
    ("result_stream", GROUP_P33_LEDGER, "position-brain"),
)
STREAMS = (
    "proposal_stream",
    "plan_stream",
    "permit_event_stream",
    "result_stream",
    "decisions",
    "deadletter",
)
#: Keys attributes of the sharded streams → all their shards (STREAM_SHARDS)
SHARDED = {
    "plan_stream": "plan_streams",
    "permit_event_stream": "permit_event_streams",
    "result_stream": "result_streams",
}


def stream_keys(k: Keys, attr: str) -> list[tuple[str, str]]:
    """``(label, key)`` of a stream attribute of :class:`Keys`: the stream itself, or with
    several shards each shard's stream, labelled ``plan_stream[0]``, ``plan_stream[1]`` …"""
    if attr not in SHARDED or k.shards == 1:
        return [(attr, getattr(k, attr))]
    return [(f"{attr}[{i}]", key) for i, key in enumerate(getattr(k, SHARDED[attr]))]


@dataclass(frozen=True, slots=True)
class Problem:
    layer: str
    what: str
    kind: str = ""  # down, group, stale, mismatch, deadletter, …
    subject: str = ""  # the service, group or symbol concerned

    def __str__(self) -> str:
        return f"{self.layer}: {self.what}"


@dataclass
class Health:
    ts: float
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    streams: dict[str, int | None] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)
    trading_state: str = TradingState.ACTIVE.value
    positions: list[dict[str, Any]] = field(default_factory=list)
    deadletters: dict[str, Any] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)
    reconcile: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["problems"] = [str(p) for p in self.problems]
        d["warnings"] = [str(p) for p in self.warnings]
        d["healthy"] = self.healthy
        return d


async def wrong_type_problem(r: AsyncRedis, h: Health, layer: str, key: str, expected: str) -> None:
    """A key of the wrong type: one problem naming the key and both types."""
    err = await wrong_type(r, key, expected)
    h.problems.append(Problem(layer, str(err), "wrong_type", key))


def reconcile_verdict(
    exchange_amt: Decimal | None, ledger_amt: Decimal | None, cfg: CheckConfig
) -> tuple[str, dict[str, str]]:
    """Exchange vs ledger, judged as P3.3's checks 3 and 4 judge them."""
    if exchange_amt is None:
        return "no_snapshot", {}
    if ledger_amt is None:
        return "no_ledger", {}
    if side_of(exchange_amt) != side_of(ledger_amt):
        return SIDE_MISMATCH, {
            "exchange_side": side_of(exchange_amt),
            "ledger_side": side_of(ledger_amt),
        }
    diff, tol = abs(exchange_amt - ledger_amt), tolerance(exchange_amt, cfg)
    ctx = {"diff": fmt_decimal(diff), "tolerance": fmt_decimal(tol)}
    return (QTY_MISMATCH, ctx) if diff > tol else ("ok", ctx)


def service_state(raw: str | None, now: float) -> dict[str, Any]:
    """One heartbeat (JSON) → what ``status`` shows. Missing or unreadable → down."""
    try:
        hb = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        hb = None
    if not isinstance(hb, dict):
        return {
            "up": False,
            "age_s": None,
            "version": None,
            "pid": None,
            "host": None,
            "metrics_port": None,
        }
    ts = hb.get("ts")
    age = round(now - float(ts), 1) if isinstance(ts, int | float) else None
    return {
        "up": age is not None,
        "age_s": age,
        "version": hb.get("version"),
        "pid": hb.get("pid"),
        "host": hb.get("host"),
        "metrics_port": hb.get("metrics_port"),
    }


def heartbeat_shards(raw: object) -> int | None:
    """The ``stream_shards`` a service's heartbeat declares (1 when it predates sharding;
    None when unreadable)."""
    try:
        hb = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return None
    if not isinstance(hb, dict):
        return None
    n = hb.get("stream_shards", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


async def group_info(r: AsyncRedis, stream: str, group: str, now: float) -> dict[str, Any] | None:
    """XINFO GROUPS for one group, plus the longest idle time of its pending entries."""
    try:
        infos = await rd.xinfo_groups(r, stream)
    except redis.exceptions.ResponseError:  # no such stream yet
        return None
    info = next((g for g in infos if g.get("name") == group), None)
    if info is None:
        return None
    lag = info.get("lag")
    pending = int(info.get("pending") or 0)
    idle_s = 0.0
    if pending:
        rows = await rd.xpending(r, stream, group)
        idle_s = max((row["time_since_delivered"] for row in rows), default=0) / 1000
    return {
        "consumers": int(info.get("consumers") or 0),
        "pending": pending,
        "lag": None if lag is None else int(lag),
        "oldest_pending_idle_s": round(idle_s, 1),
        "last_delivered_id": info.get("last-delivered-id"),
    }


async def _reconcile(r: AsyncRedis, k: Keys, s: Settings, h: Health) -> None:
    """The apply layer's reconciliation report: a changed position mode and orders the chain
    does not know are problems; a report older than three intervals is a warning."""
    rep = await rd.hgetall(r, k.reconcile)
    h.reconcile = dict(rep)
    if not rep:
        return
    if rep.get("mode_changed"):
        h.problems.append(
            Problem(
                "apply-layer",
                "exchange position mode changed while running "
                f"({rep['mode_changed']}): trading halted",
                "position_mode",
            )
        )
    try:
        unknown = [str(x) for x in json.loads(rep.get("unknown_orders") or "[]")]
    except ValueError:
        unknown = ["(unreadable report)"]
    if unknown:
        h.problems.append(
            Problem(
                "apply-layer",
                f"{len(unknown)} order(s) with the chain's "
                f"prefix it does not know: {'; '.join(unknown[:10])}",
                "unknown_orders",
            )
        )
    try:
        age = h.ts - float(rep.get("checked_at") or 0)
    except ValueError:
        age = float("inf")
    if age > 3 * s.reconcile_s:
        h.warnings.append(
            Problem("apply-layer", f"exchange reconciliation {age:.0f}s old", "reconcile")
        )


async def _positions(r: AsyncRedis, k: Keys, s: Settings, h: Health) -> None:
    cfg = CheckConfig.from_settings(s)
    symbols: set[str] = set()
    for pattern in (k.snapshot_pattern, k.ledger_pattern):
        prefix = pattern[:-1]
        symbols |= {key[len(prefix) :] async for key in r.scan_iter(match=pattern, count=1000)}
    symbols.discard(CANARY_SYMBOL)
    ordered = sorted(symbols | set(s.allow_list))
    pipe = r.pipeline(transaction=False)
    for sym in ordered:
        pipe.hgetall(k.snapshot(sym))
        pipe.hmget(k.ledger(sym), LEDGER_CHECK_FIELDS)  # not the applied-plan marks
    hashes = await pipe.execute(raise_on_error=False)
    for i, sym in enumerate(ordered):
        snap_h, led_vals = hashes[2 * i], hashes[2 * i + 1]
        for key, reply in ((k.snapshot(sym), snap_h), (k.ledger(sym), led_vals)):
            if is_wrong_type(reply):
                await wrong_type_problem(r, h, "position-brain", key, "hash")
            elif isinstance(reply, BaseException):
                raise reply
        if isinstance(snap_h, BaseException):
            snap_h = {}
        led_h = {} if isinstance(led_vals, BaseException) else ledger_fields(led_vals)
        snap, led = parse_snapshot(snap_h), parse_ledger(led_h)
        if snap is None and led is None and sym in s.allow_list:
            h.warnings.append(
                Problem("position-brain", f"{sym}: allowlisted, no snapshot", "no_snapshot", sym)
            )
            continue
        age = round(max(0.0, h.ts - snap.ts_epoch), 1) if snap else None
        verdict, ctx = reconcile_verdict(
            snap.position_amt if snap else None, led.amt if led else None, cfg
        )
        row = {
            "symbol": sym,
            "snapshot_age_s": age,
            "exchange_amt": fmt_decimal(snap.position_amt) if snap else None,
            "ledger_amt": fmt_decimal(led.amt) if led else None,
            "epoch": led_h.get("epoch"),
            "verdict": verdict,
            **ctx,
        }
        h.positions.append(row)
        if snap is None:
            h.problems.append(
                Problem(
                    "position-brain", f"{sym}: ledger but no readable snapshot", "no_snapshot", sym
                )
            )
        elif age is not None and age > s.stale_threshold_s:
            h.problems.append(
                Problem(
                    "position-brain",
                    f"{sym}: snapshot stale ({age}s > {s.stale_threshold_s:g}s)",
                    "stale",
                    sym,
                )
            )
        if verdict in (SIDE_MISMATCH, QTY_MISMATCH):
            h.problems.append(
                Problem(
                    "position-brain",
                    f"{sym}: {verdict} (exchange "
                    f"{row['exchange_amt']}, ledger {row['ledger_amt']}); "
                    "plans are denied until `permitchain reconcile`",
                    "mismatch",
                    sym,
                )
            )


async def positions(r: AsyncRedis, k: Keys, s: Settings, *, now: float | None = None) -> Health:
    """Only the positions part of the health box, each row with P3.3's in-flight claim
    (``in_flight_plan`` and its ``in_flight_ttl_s``)."""
    h = Health(ts=time.time() if now is None else now)
    await _positions(r, k, s, h)
    pipe = r.pipeline(transaction=False)
    for row in h.positions:
        pipe.get(k.inflight(row["symbol"]))
        pipe.pttl(k.inflight(row["symbol"]))
    claims = await pipe.execute(raise_on_error=False)  # a wrong key type reads "unreadable"
    for i, row in enumerate(h.positions):
        holder, pttl = claims[2 * i], claims[2 * i + 1]
        row["in_flight_plan"] = "unreadable" if isinstance(holder, Exception) else holder
        ok = holder and isinstance(pttl, int) and pttl > 0
        row["in_flight_ttl_s"] = round(pttl / 1000, 1) if ok else None
    return h


async def gather(
    r: AsyncRedis,
    k: Keys,
    s: Settings,
    *,
    max_lag: int = DEFAULT_MAX_LAG,
    deadletter_window_s: float = DEADLETTER_WINDOW_S,
    recent: int = RECENT_DECISIONS,
    now: float | None = None,
) -> Health:
    h = Health(ts=time.time() if now is None else now)
    pipe = r.pipeline(transaction=False)
    for name in SERVICES:
        pipe.get(k.heartbeat(name))
    for name, raw in zip(SERVICES, await pipe.execute(raise_on_error=False), strict=True):
        if is_wrong_type(raw):
            await wrong_type_problem(r, h, name, k.heartbeat(name), "string")
        st = service_state(None if isinstance(raw, BaseException) else raw, h.ts)
        h.services[name] = st
        if not st["up"]:
            h.problems.append(Problem(name, "down (no heartbeat)", "down", name))
        elif (n := heartbeat_shards(raw)) != k.shards:
            h.problems.append(
                Problem(
                    name,
                    f"runs STREAM_SHARDS={n}, this command {k.shards}: they read and write "
                    "different streams",
                    "mismatch",
                    name,
                )
            )
    pipe = r.pipeline(transaction=False)
    streams = [sk for attr in STREAMS for sk in stream_keys(k, attr)]
    for _label, key in streams:
        pipe.xlen(key)
    for (attr, key), n in zip(streams, await pipe.execute(raise_on_error=False), strict=True):
        h.streams[attr] = None if isinstance(n, BaseException) else int(n)
        if is_wrong_type(n):
            await wrong_type_problem(r, h, "redis", key, "stream")
    for attr, key, group, owner in [
        (label, key, group, owner)
        for stream, group, owner in GROUPS
        for label, key in stream_keys(k, stream)
    ]:
        if h.streams[attr] is None:  # a stream key of another type: reported above
            h.groups.append({"stream": attr, "group": group, "service": owner, "exists": False})
            continue
        gi = await group_info(r, key, group, h.ts)
        h.groups.append(
            {
                "stream": attr,
                "group": group,
                "service": owner,
                "exists": gi is not None,
                **(gi or {}),
            }
        )
        if gi is None:
            h.problems.append(
                Problem(owner, f"consumer group {group} on {attr} missing", "group", group)
            )
            continue
        if gi["lag"] is not None and gi["lag"] > max_lag:
            h.problems.append(
                Problem(owner, f"group {group} lags {gi['lag']} entries", "group", group)
            )
        if gi["oldest_pending_idle_s"] > PENDING_STUCK_S:
            h.problems.append(
                Problem(
                    owner,
                    f"group {group}: {gi['pending']} pending, oldest idle "
                    f"{gi['oldest_pending_idle_s']}s",
                    "group",
                    group,
                )
            )
    state = await read_trading_state(r, k)  # fail-closed: a wrong type or garbage is HALTED
    h.trading_state = state.value
    if await r.type(k.trading_state) not in ("none", "string", b"none", b"string"):
        await wrong_type_problem(r, h, "operator", k.trading_state, "string")
    if state is not TradingState.ACTIVE:
        h.warnings.append(Problem("operator", f"trading state {state.value}", "trading_state"))
    await _positions(r, k, s, h)
    await _reconcile(r, k, s, h)
    since_ms = int((h.ts - deadletter_window_s) * 1000)
    no_deadletters = h.streams["deadletter"] is None
    dl = (
        []
        if no_deadletters
        else await rd.xrange(r, k.deadletter, str(max(since_ms, 0)), count=1000)
    )
    by_service: dict[str, int] = {}
    for _id, f in dl:
        svc = f.get("service") or "unknown"
        by_service[svc] = by_service.get(svc, 0) + 1
    h.deadletters = {
        "window_s": deadletter_window_s,
        "recent": len(dl),
        "by_service": by_service,
        "total": h.streams["deadletter"],
        "last": dict(dl[-1][1]) if dl else None,
    }
    for svc, n in sorted(by_service.items()):
        h.problems.append(
            Problem(
                svc,
                f"{n} dead letter(s) in the last "
                f"{deadletter_window_s:g}s (`XRANGE {k.deadletter}`)",
                "deadletter",
                svc,
            )
        )
    if h.streams["decisions"] is not None:
        h.recent = [audit_entry(i, f) for i, f in await rd.xrevrange(r, k.decisions, count=recent)]
    return h
