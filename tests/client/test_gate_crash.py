"""Crash tests of the gate: a bot process killed (SIGKILL) between its claim and its order,
and between its order and its report. The resolver then finishes the plan by the built-in
executor's rules: the order is looked up by its client order id, never re-sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from permitchain_client import ClaimVerdict

from .conftest import SYMBOL, Running, wait_ledger
from .test_gate import place

pytestmark = pytest.mark.slow
BOT = Path(__file__).with_name("crash_bot.py")
ROOT = Path(__file__).parents[2]


def start_bot(run: Running, plan_id: str, stage: str) -> tuple[subprocess.Popen[str], str]:
    """Start the bot; returns it and its first line, once it printed it (its claim)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "clients" / "python" / "src"), str(ROOT)]
        ),
    }
    bot = subprocess.Popen(
        [sys.executable, str(BOT), run.url, run.keys.prefix, plan_id, SYMBOL, stage],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert bot.stdout is not None
    return bot, bot.stdout.readline().strip()


def kill(bot: subprocess.Popen[str]) -> None:
    bot.send_signal(signal.SIGKILL)
    bot.wait()  # reaped: its pid is gone, as after a crash
    if bot.stdout is not None:
        bot.stdout.close()


def external(run: Running, tranche: int) -> str:
    return run.client.propose(
        SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=tranche, executor="external"
    )


def test_killed_between_claim_and_order(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain()
    plan_id = external(run, 1)
    bot, line = start_bot(run, plan_id, "claim")
    assert line == f"claimed ok 0.031 pc-{plan_id}"
    kill(bot)
    t0 = time.monotonic()
    result = run.client.wait_result(plan_id, timeout=40)
    print(f"\nresolved {time.monotonic() - t0:.1f}s after the kill: {result.status}")
    # nothing was sent; the sender is gone: a final unknown, never filled, nothing re-sent
    assert (result.status, result.reason, result.filled_qty) == (
        "unknown",
        "exchange_unknown",
        Decimal(0),
    )
    assert r.xlen(run.keys.sim_fills) == 0
    assert r.hget(run.keys.ledger(SYMBOL), "last_known_amt") == "0.062"
    # the plan is finished: no second claim, and a late report is refused
    assert run.client.gate.claim(plan_id, timeout=1).verdict is ClaimVerdict.ALREADY_EXECUTED
    late = run.client.gate.report(plan_id, "filled", "0.031")
    assert not late.accepted and late.reason == "already_reported"


def test_killed_between_order_and_report(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain()
    plan_id = external(run, 2)
    bot, line = start_bot(run, plan_id, "order")
    assert line.startswith("claimed ok 0.031")
    assert bot.stdout is not None
    ordered = bot.stdout.readline().strip()
    assert ordered.startswith("ordered ")
    kill(bot)
    t0 = time.monotonic()
    result = run.client.wait_result(plan_id, timeout=40)
    print(f"\nresolved {time.monotonic() - t0:.1f}s after the kill: {result.status}")
    # the resolver found the bot's order by its client order id: the plan's one result
    assert (result.status, result.filled_qty, result.order_id) == (
        "filled",
        Decimal("0.031"),
        ordered.removeprefix("ordered "),
    )
    assert r.xlen(run.keys.sim_fills) == 1  # one order, never re-sent
    assert wait_ledger(r, run.keys, "0.031") == "0.031"


def test_a_slow_bot_still_reports_before_the_final_unknown(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain(GATE_REPORT_S="1")
    gate = run.client.gate
    plan_id = external(run, 3)
    claim = gate.claim(plan_id, timeout=20)
    assert claim.ok and claim.qty is not None
    # past GATE_REPORT_S the resolver looks the order up, finds none yet: unknown, not final
    deadline = time.monotonic() + 20
    while r.hget(run.keys.exec_record(plan_id), "state") != "unknown":
        assert time.monotonic() < deadline, "the resolver never looked"
        time.sleep(0.02)
    order_id = place(run, claim.qty, claim.client_order_id)
    report = gate.report(plan_id, "filled", claim.qty, avg_price="107", order_id=order_id)
    # The resolver's next look may find the order before the report lands: then the report
    # is refused as already reported. Either way the plan is filled, once.
    assert report.state == "filled"
    assert report.accepted or report.reason == "already_reported"
    results = [f for _, f in r.xrange(run.keys.result_stream) if f.get("plan_id") == plan_id]
    assert [f["status"] for f in results] == ["filled"]
    assert run.client.wait_result(plan_id, timeout=1).filled_qty == Decimal("0.031")
    assert wait_ledger(r, run.keys, "0.031") == "0.031"


def test_an_order_the_resolver_cannot_find_stops_the_symbol_until_reconciled(
    start_chain: Callable[..., Running], r: redis.Redis
) -> None:
    run = start_chain(COOLDOWN_S="0")
    plan_id = external(run, 4)
    bot, line = start_bot(run, plan_id, "order-own-id")  # its order under an id of its own
    assert line.startswith("claimed ok 0.031")
    assert bot.stdout is not None
    assert bot.stdout.readline().startswith("ordered ")
    kill(bot)
    result = run.client.wait_result(plan_id, timeout=40)
    assert (result.status, result.filled_qty) == ("unknown", Decimal(0))  # never "filled"
    # the exchange moved, the ledger did not: P3.3 stops the symbol ...
    deadline = time.monotonic() + 20
    while r.hget(run.keys.snapshot(SYMBOL), "position_amt") != "0.031":
        assert time.monotonic() < deadline, "P3.3 never saw the exchange's position"
        time.sleep(0.05)
    stopped = run.client.propose(SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=5)
    denied = run.client.wait_result(stopped, timeout=20)
    assert (denied.status, denied.reason) == ("blocked", "p33_denied")
    assert denied.error == "reconcile_required_qty_mismatch"
    # ... until someone reconciles (a new position epoch: new plan ids)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "permitchain",
            "reconcile",
            SYMBOL,
            "--reason",
            "bot order without the gate's id",
        ],
        env=run.chain.child_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    after = run.client.propose(SYMBOL, "PARTIAL_25", kill_score="0.7", tranche=5)
    assert after != stopped
    assert run.client.wait_result(after, timeout=20).status == "filled"
