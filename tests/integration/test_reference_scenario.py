"""docs/design.md §8 end to end, with the services as separate processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from permitchain.chain import Chain
from permitchain.scenario import SYMBOL, run_reference

pytestmark = pytest.mark.slow


def test_reference_scenario(
    chain_factory: Callable[..., Chain], redis_url: str, r: redis.Redis
) -> None:
    chain = chain_factory()
    steps: dict[str, Any] = {}
    out = run_reference(chain, redis_url, emit=lambda n, d: steps.update({n: d}))
    fills = r.xrange(chain.keys.sim_fills)
    position = r.hget(chain.keys.sim_position(SYMBOL), "amt")
    first, second = steps["first_result"], steps["second_result"]
    # the first plan: P3.3 denies the qty mismatch, the executor blocks, nothing is sent
    assert first["status"] == "blocked" and first["reason"] == "p33_denied"
    assert first["executed"] == "false" and first["client_order_id"] == ""
    p33_first = steps["permits_first"]["position-brain"]
    assert p33_first["reason"] == "reconcile_required_qty_mismatch"
    assert p33_first["context"]["diff"] == "0.06" and p33_first["context"]["tolerance"] == "0.001"
    assert steps["permits_first"]["governor"]["reason"] == "testnet_auto_approve"
    # after reconcile: a new epoch, a new plan, a 0.046 reduce-only close
    assert steps["reconcile"]["ledger_after"] == "0.062"
    assert steps["proposal_second"]["plan_id"] != steps["proposal"]["plan_id"]
    assert steps["permits_second"]["position-brain"]["safe_close_qty"] == "0.046"
    assert second["status"] == "filled" and second["executed"] == "true"
    assert second["filled_qty"] == "0.046" and second["reduce_only"] == "true"
    assert steps["order"]["order"]["reduce_only"] is True
    assert [f["qty"] for _i, f in fills] == ["0.046"]  # exactly one fill in all
    assert position == "0.016"
    assert steps["ledger"]["last_known_amt"] == "0.016"
    assert out.ok()
