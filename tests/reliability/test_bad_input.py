"""Bad input on every stream and in every key the services read: no crash, a dead letter or a
deny with a reason, nothing executed.

The services run as separate processes. Hypothesis generates garbage (wrong types, missing
fields, huge values, NaN, negative quantities, unknown actions, wrong key types); it is
written to the proposal, plan, result and permit-event streams, to permit keys (as garbage
JSON and as a HASH where a STRING belongs), to snapshots, ledgers and the trading state.
Then the chain must still be alive, every entry handled (nothing left pending), and the
exchange must not have seen a single order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from permitchain.chain import Chain
from permitchain.contract.models import make_plan_id
from tests.reliability.harness import seed_positions, settle

pytestmark = pytest.mark.slow

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
GARBAGE_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "-1",
            "0",
            "1e400",
            "-0.5",
            "true",
            "false",
            "null",
            "{}",
            "[]",
            "BTCUSDT",
            "PARTIAL_25",
            "EXECUTE",
            "1",
            "99999999999999999999999999",
            "0x10",
            " 1 ",
            "HALTED",
            "ACTIVE\n",
        ]
    ),
    st.text(max_size=40),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
    st.just("x" * 10_000),
)
PROPOSAL_FIELDS = [
    "schema",
    "proposal_id",
    "symbol",
    "action",
    "kill_score",
    "k_regime_flip",
    "new_sl",
    "r_net",
    "position_epoch",
    "tranche",
    "ts_epoch",
    "source",
]
PLAN_FIELDS = [
    "plan_id",
    "schema",
    "symbol",
    "action",
    "decision",
    "reason_codes",
    "kill_score",
    "close_fraction",
    "new_sl",
    "steps",
    "mode",
    "source",
    "proposal_id",
    "proposal_ts",
    "created_at",
    "expires_at",
]
RESULT_FIELDS = [
    "plan_id",
    "schema",
    "symbol",
    "executed",
    "status",
    "order_id",
    "client_order_id",
    "side",
    "requested_qty",
    "filled_qty",
    "avg_price",
    "reduce_only",
    "error",
    "ts",
]


def plausible(fields: list[str], sensible: dict[str, st.SearchStrategy[str]]) -> Any:
    """Field maps that are near-valid (so they reach deep into the logic) but broken somewhere."""
    value = {
        f: st.one_of(sensible[f], GARBAGE_TEXT) if f in sensible else GARBAGE_TEXT for f in fields
    }
    return st.fixed_dictionaries({}, optional=value).filter(bool)


NOW = st.builds(lambda d: f"{time.time() + d:.6f}", st.floats(-100, 5))
SENSIBLE = {
    "schema": st.just("1"),
    "symbol": st.sampled_from(SYMBOLS),
    "action": st.sampled_from(
        [
            "PARTIAL_25",
            "PARTIAL_50",
            "FULL_CLOSE_PROPOSED",
            "UPDATE_SL",
            "HOLD",
            "PARTIAL_100",
            "BUY",
        ]
    ),
    "kill_score": st.sampled_from(["0.9", "1.5", "-0.1", "NaN"]),
    "ts_epoch": NOW,
    "created_at": NOW,
    "expires_at": NOW,
    "proposal_ts": NOW,
    "decision": st.just("EXECUTE"),
    "plan_id": st.text("0123456789abcdef", min_size=16, max_size=16),
    "close_fraction": st.sampled_from(["0.25", "1", "2", "-1"]),
    "mode": st.just("testnet"),
    "steps": st.sampled_from(
        [
            '[{"step":"CLOSE_FULL","type":"market_reduce_only"}]',
            "[",
            '[{"step":"CLOSE_FULL","type":"market"}]',
            "{}",
        ]
    ),
    "status": st.sampled_from(["filled", "partially_filled", "rejected", "FILLED"]),
    "side": st.sampled_from(["BUY", "SELL", "buy"]),
    "executed": st.just("true"),
    "filled_qty": st.sampled_from(["0.01", "-5", "NaN", "1e30"]),
}


@pytest.fixture
def running(chain_factory: Callable[..., Chain], r: redis.Redis) -> Chain:
    chain = chain_factory(APPLY_PERMIT_WAIT_MS="300")
    k = chain.keys
    # real positions: any order that got through would fill and show
    seed_positions(r, k, SYMBOLS, amt="1")
    chain.start()
    chain.wait_ready()
    return chain


COUNT = {"inputs": 0}


def test_garbage_everywhere_executes_nothing(running: Chain, r: redis.Redis) -> None:
    k = running.keys

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        proposal=plausible(PROPOSAL_FIELDS, SENSIBLE),
        plan=plausible(PLAN_FIELDS, SENSIBLE),
        result=plausible(RESULT_FIELDS, SENSIBLE),
        permit=st.one_of(
            GARBAGE_TEXT,
            st.dictionaries(
                st.sampled_from(
                    [
                        "schema",
                        "plan_id",
                        "symbol",
                        "granted",
                        "allow",
                        "decision",
                        "safe_close_qty",
                        "expires_at",
                    ]
                ),
                st.one_of(st.booleans(), st.integers(), GARBAGE_TEXT),
            ).map(json.dumps),
        ),
        state=GARBAGE_TEXT,
        snapshot=st.dictionaries(
            st.sampled_from(["position_amt", "ts_epoch", "step_size", "min_qty", "mark_price"]),
            GARBAGE_TEXT,
        ),
        hash_permit=st.booleans(),
    )
    def feed(
        proposal: dict[str, str],
        plan: dict[str, str],
        result: dict[str, str],
        permit: str,
        state: str,
        snapshot: dict[str, str],
        hash_permit: bool,
    ) -> None:
        pipe = r.pipeline(transaction=False)
        pipe.xadd(k.proposal_stream, proposal)
        # garbage permits written first, so the gatekeepers' SET NX leaves them in place
        pid = make_plan_id("BTCUSDT", "FULL_CLOSE_PROPOSED", COUNT["inputs"], 7)
        if hash_permit:
            pipe.hset(k.permit_governor(pid), mapping={"granted": "true", "allow": "true"})
        else:
            pipe.set(k.permit_governor(pid), permit, ex=60)
        pipe.set(k.permit_p33(pid), permit, ex=60)
        now = time.time()
        pipe.xadd(
            k.plan_stream,
            {
                **{
                    f: v
                    for f, v in {
                        "plan_id": pid,
                        "schema": "1",
                        "symbol": "BTCUSDT",
                        "action": "FULL_CLOSE_PROPOSED",
                        "decision": "EXECUTE",
                        "reason_codes": "plan_ok",
                        "kill_score": "0.9",
                        "close_fraction": "1",
                        "new_sl": "",
                        "mode": "testnet",
                        "source": "fuzz",
                        "steps": (
                            '[{"step":"CLOSE_FULL","type":"market_reduce_only","fraction":"1"}]'
                        ),
                        "proposal_id": "f",
                        "proposal_ts": f"{now:.6f}",
                        "created_at": f"{now:.6f}",
                        "expires_at": f"{now + 30:.6f}",
                    }.items()
                }
            },
        )
        pipe.xadd(k.plan_stream, plan)
        pipe.xadd(k.result_stream, result)
        pipe.xadd(k.permit_event_stream, {"plan_id": plan.get("plan_id", "x"), "layer": state})
        pipe.set(k.trading_state, state)
        pipe.hset(k.snapshot(SYMBOLS[1]), mapping=snapshot or {"x": "y"})
        pipe.hset(k.ledger(SYMBOLS[1]), mapping={"last_known_amt": state, "epoch": state})
        pipe.execute()
        COUNT["inputs"] += 9

    feed()
    r.delete(k.trading_state)
    state = settle(r, k)
    alive = {n: p.poll() is None for n, p in running.procs.items()}
    fills = r.xlen(k.sim_fills)
    dead = r.xlen(k.deadletter)
    print(
        f"\nbad input: {COUNT['inputs']} inputs tried; dead letters {dead}; "
        f"fills {fills}; groups {state}; alive {alive}"
    )
    assert all(alive.values()), alive
    assert all(v == (0, 0) for v in state.values()), state
    assert fills == 0
    assert dead > 0
    for s in SYMBOLS:
        assert r.hget(k.sim_position(s), "amt") == "1"
    executed = [
        f
        for _i, f in r.xrange(k.result_stream)
        if f.get("executed") == "true" and f.get("client_order_id", "").startswith("pc-")
    ]
    assert executed == []
