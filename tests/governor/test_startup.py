"""The governor's consumer groups (production start-up: tests/security/test_key_custody.py)."""

from __future__ import annotations

from permitchain.contract.keys import GROUP_GOVERNOR, GROUP_GOVERNOR_RESULTS, Keys
from permitchain.contract.settings import Settings
from permitchain.governor.service import Governor
from permitchain.runtime.clock import SystemClock
from permitchain.store import async_client


def test_governor_consumes_plans_and_results_in_its_own_groups() -> None:
    k = Keys("quantum")
    prod = Settings(apply_mode="production")
    gov = Governor(async_client("redis://127.0.0.1:1"), k, prod, SystemClock())
    assert [(c.stream, c.group) for c in gov.consumers()] == [
        ("quantum:stream:apply.plan", GROUP_GOVERNOR),
        ("quantum:stream:apply.result", "governor-results"),
    ]
    # with auto-approve nothing is counted, so the result stream is not read at all
    auto = Governor(async_client("redis://127.0.0.1:1"), k, Settings(), SystemClock())
    assert [(c.stream, c.group) for c in auto.consumers()] == [
        ("quantum:stream:apply.plan", GROUP_GOVERNOR)
    ]
    manual = Settings(testnet_auto_approve=False)
    assert (
        len(Governor(async_client("redis://127.0.0.1:1"), k, manual, SystemClock()).consumers())
        == 2
    )
    assert GROUP_GOVERNOR_RESULTS == "governor-results"
    assert gov.reservation_ttl_s == 61.2  # PERMIT_TTL_SECONDS 60 + APPLY_PERMIT_WAIT_MS 1200
    assert k.governor_executions("BTCUSDT") == "quantum:gov:{BTCUSDT}:executions"
    assert k.governor_reservations("BTCUSDT") == "quantum:gov:{BTCUSDT}:reservations"
