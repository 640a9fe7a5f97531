"""`permitchain reconcile SYMBOL`: the ledger set to the exchange amount, audited."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from permitchain.cli.main import app
from permitchain.contract.keys import Keys


@pytest.fixture
def cli(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("KEY_PREFIX", prefix)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def _setup(r: redis.Redis, keys: Keys, exchange: str = "0.062", ledger: str = "0.002") -> None:
    r.hset(keys.sim_filters("BTCUSDT"), mapping={"step_size": "0.001", "min_qty": "0.001"})
    r.sadd(keys.sim_symbols, "BTCUSDT")
    r.hset(keys.sim_position("BTCUSDT"), mapping={"amt": exchange, "entry_price": "100"})
    r.hset(
        keys.ledger("BTCUSDT"),
        mapping={"last_known_amt": ledger, "last_known_side": "LONG", "epoch": "0"},
    )


def _audit(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [
        json.loads(f["context"])
        for _i, f in r.xrange(keys.decisions)
        if f["decision"] == "RECONCILE"
    ]


def test_dry_run_changes_nothing_then_reconcile_sets_the_exchange_amount(
    cli: Any, r: redis.Redis, keys: Keys
) -> None:
    _setup(r, keys)
    out = cli("reconcile", "BTCUSDT", "--dry-run")
    assert out.exit_code == 0, out.output
    assert "would set ledger 0.002 → 0.062" in out.output and "diff 0.06" in out.output
    assert r.hget(keys.ledger("BTCUSDT"), "last_known_amt") == "0.002"
    assert _audit(r, keys) == []
    out = cli("reconcile", "BTCUSDT", "--reason", "grew outside the chain")
    assert out.exit_code == 0, out.output
    led = r.hgetall(keys.ledger("BTCUSDT"))
    assert (led["last_known_amt"], led["last_known_side"], led["epoch"]) == ("0.062", "LONG", "1")
    (entry,) = _audit(r, keys)
    assert entry["ledger_before"] == "0.002" and entry["ledger_after"] == "0.062"
    assert entry["note"] == "grew outside the chain" and entry["dry_run"] is False


def test_a_short_and_a_flat_symbol(cli: Any, r: redis.Redis, keys: Keys) -> None:
    _setup(r, keys, exchange="-0.5", ledger="0.1")
    assert cli("reconcile", "BTCUSDT").exit_code == 0
    assert r.hget(keys.ledger("BTCUSDT"), "last_known_side") == "SHORT"
    r.delete(keys.sim_position("BTCUSDT"))  # listed, no position: the exchange says 0
    assert cli("reconcile", "BTCUSDT").exit_code == 0
    assert r.hget(keys.ledger("BTCUSDT"), "last_known_amt") == "0"
    out = cli("reconcile", "NOSUCHUSDT")
    assert out.exit_code == 2 and "no such symbol" in out.output


def test_refused_while_a_close_is_in_flight_unless_forced(
    cli: Any, r: redis.Redis, keys: Keys
) -> None:
    _setup(r, keys)
    r.set(keys.inflight("BTCUSDT"), "abcdef0123456789", px=15000)
    out = cli("reconcile", "BTCUSDT")
    assert out.exit_code == 2 and "abcdef0123456789 is in flight" in out.output
    assert r.hget(keys.ledger("BTCUSDT"), "last_known_amt") == "0.002"
    out = cli("reconcile", "BTCUSDT", "--force")
    assert out.exit_code == 0 and r.hget(keys.ledger("BTCUSDT"), "last_known_amt") == "0.062"
    assert _audit(r, keys)[0]["in_flight_plan"] == "abcdef0123456789"
