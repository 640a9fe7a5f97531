"""Exchange faults under load: the chain fails closed while the exchange misbehaves and
recovers by itself when it stops.

Services run as separate processes against the simulated exchange; its fault injection
(``quantum:sim:config``, ``permitchain sim fault``) is switched on under a steady stream of
proposals, left on for ``FAULT_S`` seconds, then cleared while the load continues until the
exchange reports a fill again. Then the chain settles and the harness invariants are checked:
no fill while the fault forbids one, no plan filled twice, every plan terminal with exactly one
result, nothing pending, ledger equal to exchange, every service process still alive.

Faults: an order request that times out without being placed (``timeout``); an order that is
placed and filled but whose response is lost (``lose_response``: the executor finds it by
client order id, never re-sends); an order accepted but left NEW (``new``: never reported
filled; the test then cancels the resting orders exchange-side, as an exchange or an operator
would, so the resolver can conclude them within the test's budget instead of after its
120 s give-up); rejections (``reject``, -2019); position reads failing (``fetch_fail``: the
snapshots age and P3.3 denies ``stale_exchange_state`` once they are older than
``STALE_THRESHOLD_S``); a slow exchange (``latency_ms`` on every call). Rate limits (HTTP 429)
are covered at the adapter level, in ``tests/exchange/test_binance_errors.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from tests.reliability.harness import (
    Load,
    check_invariants,
    gatekeeper_denies,
    settle,
    started_chain,
    wait_fills,
    wait_resolved,
)

pytestmark = pytest.mark.slow

FAULT_S = 3.0  # how long the fault stays on under load: the length of the fault is the point
STALE_S = 2.0  # STALE_THRESHOLD_S for the run
MARGIN_S = 1.5  # a plan allowed just before the fault may still be in flight this long


@dataclass(frozen=True)
class Fault:
    name: str
    config: dict[str, str]
    # fills are forbidden from (fault on + forbid_after_s) until the fault is cleared;
    # None: the fault does not forbid fills (the exchange fills, slowly or silently)
    forbid_after_s: float | None
    # result statuses / gatekeeper denies the fault must visibly have caused
    expect_status: dict[str, str] = field(default_factory=dict)
    expect_deny: str = ""
    duration_s: float = FAULT_S


FAULTS = [
    Fault("timeout", {"order_mode": "timeout"}, 0.5, {"unknown": "exchange_unknown"}),
    Fault("lose_response", {"order_mode": "lose_response"}, None, {"filled": "ok"}),
    Fault("new", {"order_mode": "new"}, 0.5, {"rejected": "exchange_rejected"}),
    Fault("reject", {"order_mode": "reject"}, 0.5, {"rejected": "exchange_rejected"}),
    Fault(
        "stale",
        {"fetch_fail": "1"},
        STALE_S + MARGIN_S,
        expect_deny="position-brain:stale_exchange_state",
        duration_s=STALE_S + 3,
    ),
    Fault("slow", {"latency_ms": "800"}, None, {"filled": "ok"}),
]


def cancel_resting(r: redis.Redis, k: Keys) -> int:
    """Cancel, exchange-side, every reduce-only order the simulated exchange left NEW."""
    n = 0
    for key in r.scan_iter(match=k.sim_order("*", "*"), count=1000):
        if (
            r.type(key) == "hash"
            and r.hget(key, "status") == "NEW"
            and r.hget(key, "type") == "MARKET"
        ):
            r.hset(key, "status", "CANCELED")
            n += 1
    return n


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_exchange_fault_fails_closed_and_recovers(
    fault: Fault, chain_factory: Callable[..., Chain], r: redis.Redis, redis_url: str
) -> None:
    symbols = [f"XF{i}USDT" for i in range(6)]
    chain = started_chain(chain_factory, r, symbols, STALE_THRESHOLD_S=str(STALE_S))
    k = chain.keys
    r.hset(k.sim_config, mapping=fault.config)
    on_at = time.time()
    load = Load(redis_url, k, symbols, rate=10)
    load.start()
    try:
        time.sleep(fault.duration_s)  # the fault under load; not a synchronisation
        alive_during = {n: p.poll() is None for n, p in chain.procs.items()}
        fills_at_clear = r.xlen(k.sim_fills)
        r.delete(k.sim_config)
        off_at = time.time()
        recovered = wait_fills(r, k, fills_at_clear, timeout_s=30)  # load runs until it fills
        recovery_s = time.time() - off_at
    finally:
        load.stop.set()
        load.join()
    cancelled = cancel_resting(r, k) if fault.name == "new" else 0
    still_open = wait_resolved(r, k, timeout_s=30)
    groups = settle(r, k, timeout_s=60)
    violations, figures = check_invariants(r, k, symbols)
    fills = [f for _i, f in r.xrange(k.sim_fills)]
    results = [f for _i, f in r.xrange(k.result_stream)]
    statuses = Counter(f"{x.get('status')}/{x.get('reason', '')}" for x in results)
    during = [f for f in fills if on_at <= float(f["ts"]) < off_at]
    forbidden = (
        []
        if fault.forbid_after_s is None
        else [f for f in fills if on_at + fault.forbid_after_s <= float(f["ts"]) < off_at]
    )
    denies = gatekeeper_denies(r, k)
    print(
        f"\nexchange fault {fault.name} {fault.config} for {fault.duration_s:.0f}s: "
        f"proposals {load.sent}; "
        f"plans {figures['plans']}, executions {figures['executions']} "
        f"({len(during)} during the fault, {len(forbidden)} forbidden); "
        f"first fill {recovery_s:.2f}s after clearing; results {dict(statuses)}; "
        f"blocked {figures['blocked']}; gatekeeper denies {denies}; "
        + (f"resting orders cancelled {cancelled}; " if cancelled else "")
        + f"violations {len(violations)}"
    )
    assert all(alive_during.values()), alive_during
    assert all(p.poll() is None for p in chain.procs.values()), chain.procs
    assert forbidden == [], forbidden[:5]
    if fault.forbid_after_s is not None:  # the forbidding window was real
        assert off_at - on_at > fault.forbid_after_s + 1
    assert recovered, "no fill after the fault was cleared"
    assert still_open == 0
    assert all(v == (0, 0) for v in groups.values()), groups
    assert violations == [], violations[:20]
    for status, reason in fault.expect_status.items():
        assert statuses[f"{status}/{reason}"] > 0, statuses
    if fault.expect_deny:
        assert denies.get(fault.expect_deny, 0) > 0, denies
    if fault.name == "lose_response":  # filled, found by client order id after the lost answer
        assert any(
            f["status"] == "filled" and "response lost" in f.get("error", "") for f in results
        ), statuses
    if fault.name == "new":
        assert cancelled > 0
