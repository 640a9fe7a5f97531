"""What both framework backtests share: the events file, the chain's simulated exchange
that mirrors the framework's position, and the wait until P3.3 reads that position.
Settings from the environment: $GATE_EVENTS, $GATE_REDIS_URL, $GATE_KEY_PREFIX."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis


def argument_parser(klines: Path) -> argparse.ArgumentParser:
    """The backtests' arguments: the chain (``--redis-url``, ``--key-prefix``), the events
    file (``--out``) and the candles (``--klines``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--key-prefix", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--klines", default=str(klines))
    return ap


def use(args: argparse.Namespace) -> None:
    """Sets the environment the functions below read (and the framework's own process)."""
    os.environ.update(
        GATE_EVENTS=args.out, GATE_REDIS_URL=args.redis_url, GATE_KEY_PREFIX=args.key_prefix
    )


def event(**fields: Any) -> None:
    with open(os.environ["GATE_EVENTS"], "a") as f:
        f.write(json.dumps(fields, default=str) + "\n")


def sim(*args: str) -> str:
    """The chain's simulated exchange, standing in for the framework's exchange. The
    backtest's own ``GATE_*`` variables stay out of permitchain's environment: it refuses a
    variable whose name is close to a setting's (``GATE_KEY_PREFIX`` ~ ``KEY_PREFIX``)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATE_")},
        "REDIS_URL": os.environ["GATE_REDIS_URL"],
        "KEY_PREFIX": os.environ["GATE_KEY_PREFIX"],
    }
    return subprocess.run(
        ["permitchain", "sim", *args], env=env, check=True, text=True, capture_output=True
    ).stdout


def wait_chain_sees_exchange(symbol: str) -> None:
    """Until P3.3's snapshot and ledger both read the (simulated) exchange's position, as the
    next plan's checks will."""
    r = redis.Redis.from_url(os.environ["GATE_REDIS_URL"], decode_responses=True)
    prefix = os.environ["GATE_KEY_PREFIX"]
    amount = Decimal(r.hget(f"{prefix}:sim:{{{symbol}}}:position", "amt") or 0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        snap = r.hget(f"{prefix}:position:snapshot:{symbol}", "position_amt")
        ledger = r.hget(f"{prefix}:position:ledger:{symbol}", "last_known_amt")
        if snap is not None and Decimal(snap) == amount == Decimal(ledger or 0):
            r.close()
            return
        time.sleep(0.05)
    r.close()
    raise TimeoutError(f"the chain never saw the position at {amount}")
