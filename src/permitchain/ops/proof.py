"""``permitchain proof``: is the chain working, end to end? Each check passes or fails with
a reason naming the layer; ``proof`` exits 1 when any fails.

Checks: services alive, metrics endpoints answering (port from each heartbeat), exchange
snapshots fresh, ledgers initialised, permits issued (the gatekeepers' groups keep up),
plans flowing (planner, executor, ledger groups keep up), no recent dead letters.

``--canary`` also follows a harmless probe through every layer (``ops/canary.py``).
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from permitchain.contract.keys import SERVICES, Keys
from permitchain.contract.settings import Settings
from permitchain.ops import canary_metrics
from permitchain.ops.canary import CANARY_TIMEOUT_S, run_canary
from permitchain.ops.check import Check
from permitchain.ops.health import Health, gather
from permitchain.store import AsyncRedis

METRICS_TIMEOUT_S = 2.0


def _fetch(url: str) -> str:
    # A fixed http URL to 127.0.0.1, built from an integer port: no user-supplied scheme.
    with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as resp:  # noqa: S310
        body: bytes = resp.read()
    return body.decode("utf-8", "replace")


async def metrics_check(name: str, svc: dict[str, Any]) -> Check:
    port = svc.get("metrics_port")
    if not svc["up"]:
        return Check(f"metrics {name}", name, False, "service down: no heartbeat, no port")
    if not isinstance(port, int) or port <= 0:
        return Check(f"metrics {name}", name, False, "heartbeat publishes no metrics_port")
    if svc.get("host") not in (None, socket.gethostname()):
        return Check(
            f"metrics {name}",
            name,
            None,
            f"runs on {svc['host']}; metrics listen on its 127.0.0.1 only",
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        body = await asyncio.to_thread(_fetch, url)
    except (urllib.error.URLError, OSError) as e:
        return Check(f"metrics {name}", name, False, f"{url}: {e}")
    if f'permitchain_service_up{{service="{name}"}} 1.0' not in body:
        return Check(f"metrics {name}", name, False, f"{url} answers but not as {name}")
    return Check(f"metrics {name}", name, True, f"{url} answers")


def _subjects(h: Health, kind: str) -> set[str]:
    return {p.subject for p in h.problems if p.kind == kind}


def health_checks(h: Health) -> list[Check]:
    checks = []
    for name in SERVICES:
        st = h.services[name]
        checks.append(
            Check(
                f"alive {name}",
                name,
                st["up"],
                f"heartbeat {st['age_s']}s old, version {st['version']}, pid {st['pid']}"
                if st["up"]
                else "no heartbeat: down",
            )
        )
    snaps = [p for p in h.positions if p["snapshot_age_s"] is not None]
    stale = [p for p in snaps if p["symbol"] in _subjects(h, "stale")]
    checks.append(
        Check(
            "snapshots fresh",
            "position-brain",
            bool(snaps) and not stale,
            f"stale: {', '.join(p['symbol'] for p in stale)}"
            if stale
            else f"{len(snaps)} symbol(s), oldest "
            f"{max((p['snapshot_age_s'] for p in snaps), default=0)}s"
            if snaps
            else "no exchange snapshot at all: is the poller reaching the exchange?",
        )
    )
    missing = [p["symbol"] for p in snaps if p["ledger_amt"] is None]
    checks.append(
        Check(
            "ledger initialised",
            "position-brain",
            bool(snaps) and not missing,
            f"no ledger for {', '.join(missing)}"
            if missing
            else f"{len(snaps)} ledger(s)"
            if snaps
            else "no snapshot, so no ledger",
        )
    )

    def groups(names: tuple[str, ...]) -> tuple[bool, str, str]:
        bad = [g for g in h.groups if g["group"] in names and g["group"] in _subjects(h, "group")]
        shown = [
            f"{g['group']} lag {g.get('lag')} pending {g.get('pending')}"
            for g in h.groups
            if g["group"] in names
        ]
        layer = bad[0]["service"] if bad else "-"
        why = "; ".join(
            f"{g['group']} ({g['service']}): "
            + (
                "missing"
                if not g["exists"]
                else f"lag {g.get('lag')}, pending {g.get('pending')}, oldest idle "
                f"{g.get('oldest_pending_idle_s')}s"
            )
            for g in bad
        )
        return not bad, layer, why or ", ".join(shown)

    ok, layer, why = groups(("governor", "p33"))
    checks.append(Check("permits issued", layer if not ok else "governor+position-brain", ok, why))
    ok, layer, why = groups(("planner", "executor", "p33-ledger"))
    checks.append(Check("plans flowing", layer if not ok else "apply-layer", ok, why))
    dl = h.deadletters
    checks.append(
        Check(
            "no dead letters",
            ",".join(sorted(dl["by_service"])) or "-",
            dl["recent"] == 0,
            f"{dl['recent']} in the last {dl['window_s']:g}s; last: "
            f"{(dl['last'] or {}).get('error')}"
            if dl["recent"]
            else f"none in the last {dl['window_s']:g}s",
        )
    )
    return checks


async def run_proof(
    r: AsyncRedis,
    k: Keys,
    s: Settings,
    *,
    canary: bool = False,
    timeout_s: float = CANARY_TIMEOUT_S,
) -> list[Check]:
    h = await gather(r, k, s)
    checks = health_checks(h)
    checks[len(SERVICES) : len(SERVICES)] = await asyncio.gather(
        *(metrics_check(n, h.services[n]) for n in SERVICES)
    )
    if canary:
        started = time.time()
        checks += await run_canary(r, k, s, timeout_s)
        await canary_metrics.record(
            r, k, canary_metrics.record_fields(checks, started, time.time())
        )
    return checks
