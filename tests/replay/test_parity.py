"""Parity: the same candles through the running chain and through the replay give the same
exits (actions, quantities, order).

The chain runs as ``permitchain up`` does (separate processes, sim exchange) with the sim's
price driver reading the candle file (``SIM_PRICE_FILE``). The file is a slice of the shared
UNITTEST_BTC-1m candles on an accelerated clock: one candle every 0.5 s instead of 60 s
(written to the test's temporary folder, closes only, so the driver's mark and the replay's
candle are the same price), with bars of 0.5 s on both sides and every other duration the
same number of seconds on both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from permitchain.chain import Chain
from permitchain.contract.models import Proposal
from permitchain.exchange.sim import SimExchange
from permitchain.exit_brain.api import expected_plan_id
from permitchain.replay import runner
from permitchain.replay.data import read_series
from permitchain.replay.entries import read_entries
from permitchain.services import SERVICE_NAMES
from permitchain.store import async_client

pytestmark = pytest.mark.slow
SYM = "BTCUSDT"
START, CANDLES, STEP_MS = 830, 70, 500  # the slice, and its accelerated clock
BASE_MS = 1_700_000_000_000
SAME = {"EXIT_BAR_S": "0.5", "COOLDOWN_S": "2", "APPLY_MODE": "testnet"}


def write_slice(klines: Path, tmp_path: Path) -> tuple[Path, Decimal]:
    closes = read_series(klines / "UNITTEST_BTC-1m.csv").closes[START : START + CANDLES]
    f = tmp_path / "UNITTEST_BTC-500ms.csv"
    rows = [f"{BASE_MS + STEP_MS * k},{c},{c},{c},{c},1" for k, c in enumerate(closes)]
    f.write_text("open_time,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return f, closes[0]


def replayed(data: Path, entry: Decimal, tmp_path: Path) -> list[tuple[str, Decimal]]:
    entries = tmp_path / "entries.csv"
    entries.write_text(f"time,symbol,side,qty,entry_price\n{BASE_MS},,long,1,{entry}\n")
    settings, options = runner.build_settings(
        {**SAME, "REPLAY_SLIPPAGE": "0", "REPLAY_TICK_SIZE": "0.00000001"}, environ={}
    )
    (res,) = runner.replay(runner.load([str(data)]), settings, options, read_entries(entries))
    (trade,) = res.trades
    return [
        (e.action, e.qty) for e in trade.exits if e.executed and e.action not in ("STOP", "END")
    ]


async def filled(r: Any, chain: Chain, expect: int, timeout_s: float) -> list[dict[str, str]]:
    """The result stream's filled results, until ``expect`` of them or the candles ran out."""
    results: list[dict[str, str]] = []
    last, deadline = "0-0", time.monotonic() + timeout_s
    while len(results) < expect and time.monotonic() < deadline:
        for _s, entries in (
            await r.xread({chain.keys.result_stream: last}, count=100, block=500) or []
        ):
            for entry_id, fields in entries:
                last = entry_id
                if fields.get("status") == "filled":
                    results.append(dict(fields))
    return results


def test_the_chain_and_the_replay_send_the_same_exits(
    klines: Path, tmp_path: Path, chain_factory: Callable[..., Chain], redis_url: str
) -> None:
    data, first_close = write_slice(klines, tmp_path)
    expected = replayed(data, first_close, tmp_path)
    assert len(expected) >= 3  # the slice was chosen for several exits, far enough apart
    chain = chain_factory(
        ALLOW_LIST_SYMBOLS=SYM,
        EXIT_INTERVAL_S="0.1",
        SIM_DRIVE_PRICES="true",
        SIM_PRICE_FILE=str(data),
        POLL_INTERVAL_S="0.5",
        **SAME,
    )

    async def body() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        r = async_client(redis_url)
        sim = SimExchange(r, chain.keys)
        try:
            await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", tick_size="0.00000001")
            await sim.set_position(SYM, Decimal(1), first_close)
            others = [s for s in SERVICE_NAMES if s != "exit-brain"]
            await asyncio.to_thread(chain.start, others)
            await asyncio.to_thread(chain.wait_ready, others)
            await asyncio.to_thread(chain.start, ["exit-brain"])  # its driver starts the file
            results = await filled(r, chain, len(expected), CANDLES * STEP_MS / 1000 + 15)
            proposals = [f for _i, f in await r.xrange(chain.keys.proposal_stream)]
            return results, proposals
        finally:
            await r.aclose()

    results, proposals = asyncio.run(body())
    by_plan = {expected_plan_id(Proposal.from_fields(p)): p for p in proposals}
    live = [(by_plan[x["plan_id"]]["action"], Decimal(x["requested_qty"])) for x in results]
    assert live == expected
