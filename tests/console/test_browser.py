"""The console page in a real browser: Playwright driving Debian's chromium (its executable,
no browser download). In CI (``CI=true``) these tests must run: a missing browser or
Playwright fails them; elsewhere they are skipped, saying why.

With ``CONSOLE_SCREENSHOTS=DIR`` the main views are saved there (docs/img/ holds them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from permitchain.contract.keys import Keys
from tests.console.conftest import Live
from tests.console.helpers import SECRET

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 20_000
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


def unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests must run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        unavailable(f"playwright is not installed ({e}); pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def sim(live: Live, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "permitchain", "sim", *args],
        env=live.chain.child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def open_console(page: Any, live: Live, *, token: str | None = SECRET) -> None:
    page.goto(live.url + "/")
    if token:
        page.fill("#operator", "tester")
        page.fill("#token", token)
        page.click("#login button")
    expect(page.locator("#live")).to_have_text("events: live")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def wait_snapshot(live: Live, symbol: str) -> None:
    deadline = time.monotonic() + 20
    while not any(
        p["symbol"] == symbol and p["exchange_amt"] not in (None, "0")
        for p in live.get("/api/positions").json()["positions"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def propose_on_page(page: Any, symbol: str, action: str, tranche: int) -> str:
    page.fill("#propose-form input[name=symbol]", symbol)
    page.select_option("#propose-form select[name=action]", action)
    page.fill("#propose-form input[name=tranche]", str(tranche))
    page.click("#propose-form button")
    expect(page.locator("#propose-msg")).to_contain_text("→ plan")
    return str(page.locator("#propose-msg").inner_text().rsplit(" ", 1)[-1])


def test_a_proposal_appears_and_reaches_filled(
    live_factory: Callable[..., Live], page: Any
) -> None:
    live = live_factory()
    sim(live, "set-position", "BTCUSDT", "0.062", "--entry", "100")
    wait_snapshot(live, "BTCUSDT")
    open_console(page, live)
    plan_id = propose_on_page(page, "BTCUSDT", "PARTIAL_50", 1)
    row = page.locator(f'tr[data-plan="{plan_id}"]')
    expect(row).to_have_attribute("data-outcome", "filled")
    seen = time.time()
    expect(row.locator("td.step").nth(3)).to_contain_text("filled")
    for layer_cell, text in ((0, "EXECUTE"), (1, "GRANT"), (2, "ALLOW")):
        expect(row.locator("td.step").nth(layer_cell)).to_contain_text(text)
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    result_ms = next(
        int(i.split("-")[0])
        for i, f in r.xrange(live.chain.keys.result_stream)
        if f["plan_id"] == plan_id
    )
    r.close()
    print(
        f"\npage showed {plan_id} filled {(seen - result_ms / 1000) * 1000:.0f} ms after its "
        "result was on the stream (includes Playwright's polling)"
    )
    shot(page, "console-live.png")
    row.locator("a").click()
    expect(page.locator("#plan-outcome-value")).to_have_text("filled")
    expect(page.locator("#plan-steps")).to_contain_text("CONSUMED")
    shot(page, "console-plan.png")


def test_a_blocked_plan_shows_its_reason(live_factory: Callable[..., Live], page: Any) -> None:
    live = live_factory()
    sim(live, "set-position", "BTCUSDT", "0.062", "--entry", "100")
    wait_snapshot(live, "BTCUSDT")
    open_console(page, live)
    sim(live, "set-position", "BTCUSDT", "0.5", "--entry", "100")  # the ledger disagrees now
    wait_snapshot_amt(live, "BTCUSDT", "0.5")
    plan_id = propose_on_page(page, "BTCUSDT", "PARTIAL_25", 2)
    row = page.locator(f'tr[data-plan="{plan_id}"]')
    expect(row).to_have_attribute("data-outcome", "blocked")
    reason = live.get(f"/api/plans/{plan_id}").json()["steps"]
    p33 = next(s for s in reason if s["layer"] == "position-brain")
    assert p33["decision"] == "DENY"
    expect(row.locator("td.step").nth(2)).to_contain_text(p33["reason"])
    expect(row.locator("td.step").nth(3)).to_contain_text("p33_denied")
    expect(page.locator(f'#denial-rows tr[data-reason="{p33["reason"]}"]')).to_be_visible()
    expect(page.locator('#position-rows tr[data-symbol="BTCUSDT"]')).to_have_class("mismatch")
    shot(page, "console-blocked.png")


def wait_snapshot_amt(live: Live, symbol: str, amt: str) -> None:
    deadline = time.monotonic() + 20
    while not any(
        p["symbol"] == symbol and p["exchange_amt"] == amt
        for p in live.get("/api/positions").json()["positions"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_halt_without_a_token_is_refused_and_with_it_halts(
    live_factory: Callable[..., Live], page: Any
) -> None:
    live = live_factory()
    k: Keys = live.chain.keys
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    page.goto(live.url + "/")
    page.fill("#state-reason", "page drill")
    page.click("#killswitch button[data-action=halt]")
    expect(page.locator("#state-confirm")).to_be_visible()
    page.click("#state-confirm-yes")
    expect(page.locator("#state-msg")).to_contain_text("refused (401)")
    assert r.get(k.trading_state) in (None, "ACTIVE")
    open_console(page, live)
    page.fill("#state-reason", "page drill")
    page.click("#killswitch button[data-action=halt]")
    page.click("#state-confirm-yes")
    expect(page.locator("#state-msg")).to_contain_text("ACTIVE → HALTED")
    assert r.get(k.trading_state) == "HALTED"
    last = r.xrevrange(k.decisions, count=1)[0][1]
    assert last["decision"] == "TRADING_HALTED" and '"operator":"tester@alice"' in last["context"]
    expect(page.locator("#state")).to_have_text("trading: HALTED")
    shot(page, "console-halted.png")
    r.close()


def test_reconcile_from_the_page(live_factory: Callable[..., Live], page: Any) -> None:
    live = live_factory()
    sim(live, "set-position", "BTCUSDT", "0.062", "--entry", "100")
    wait_snapshot(live, "BTCUSDT")
    sim(live, "set-position", "BTCUSDT", "0.04", "--entry", "100")  # a fill outside the chain
    wait_snapshot_amt(live, "BTCUSDT", "0.04")
    open_console(page, live)
    row = page.locator('#position-rows tr[data-symbol="BTCUSDT"]')
    expect(row).to_have_class("mismatch")
    row.locator("button.reconcile").click()
    expect(page.locator("#reconcile-text")).to_contain_text("would set the ledger 0.062 → 0.04")
    shot(page, "console-reconcile.png")
    page.fill("#reconcile-reason", "manual close on the exchange")
    page.click("#reconcile-yes")
    expect(page.locator("#reconcile-msg")).to_contain_text("reconciled BTCUSDT: ledger 0.04")
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    assert r.hget(live.chain.keys.ledger("BTCUSDT"), "last_known_amt") == "0.04"
    r.close()
    expect(row).not_to_have_class("mismatch")


def test_the_page_keeps_up_at_1000_plans_per_s(
    live_factory: Callable[..., Live], page: Any
) -> None:
    """Five audit entries per plan (planner, governor, P3.3, executor, ledger) at 1,000
    plans/s for 5 s, straight onto the audit stream. Asserted: the page draws a capped
    table and the last plan reaches it. Printed (not asserted): frames per second and the
    page's answer time while it is under load."""
    live = live_factory(services=())
    open_console(page, live)
    page.evaluate("""() => { window.frames_seen = 0;
        const tick = () => { window.frames_seen++; requestAnimationFrame(tick); };
        requestAnimationFrame(tick); }""")
    k: Keys = live.chain.keys
    r = redis.Redis.from_url(live.chain.redis_url, decode_responses=True)
    rate, seconds, batch = 1000, 5, 10
    layers = (
        ("planner", "EXECUTE", "plan_ok"),
        ("governor", "GRANT", "testnet_auto_approve"),
        ("position-brain", "ALLOW", "ok"),
        ("executor", "EXECUTED", "ok"),
        ("position-brain", "LEDGER_APPLY", "applied"),
    )
    answers = []
    start = time.monotonic()
    f0 = page.evaluate("window.frames_seen")
    for n in range(0, rate * seconds, batch):
        pipe = r.pipeline(transaction=False)
        for i in range(n, n + batch):
            for layer, decision, reason in layers:
                ctx = '{"result":{"status":"filled"}}' if layer == "executor" else "{}"
                pipe.xadd(
                    k.decisions,
                    {
                        "plan_id": f"load{i:06d}",
                        "symbol": "BTCUSDT",
                        "layer": layer,
                        "decision": decision,
                        "reason": reason,
                        "context": ctx,
                        "ts": f"{time.time():.6f}",
                    },
                )
        pipe.execute()
        if n % 500 == 0:
            t = time.monotonic()
            page.evaluate("1")
            answers.append((time.monotonic() - t) * 1000)
        time.sleep(max(0.0, start + (n + batch) / rate - time.monotonic()))
    elapsed = time.monotonic() - start
    fps = (page.evaluate("window.frames_seen") - f0) / elapsed
    last = f"load{rate * seconds - 1:06d}"
    expect(page.locator(f'tr[data-plan="{last}"]')).to_have_attribute("data-outcome", "filled")
    assert page.locator("#plans tr").count() <= 60
    r.close()
    answers.sort()
    print(
        f"\npage under {rate * seconds * len(layers) / elapsed:.0f} events/s "
        f"({rate} plans/s): {fps:.0f} frames/s, answer time p50 "
        f"{answers[len(answers) // 2]:.0f} ms, max {answers[-1]:.0f} ms"
    )
