"""The simulated exchange's price driver reading recorded candles (SIM_PRICE_FILE): each
close becomes the mark, with the candle's time on the accelerated clock as the mark's own
time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.exchange.sim_prices import drive_file, file_clock

SYM = "BTCUSDT"


def test_file_clock_keeps_bars_aligned() -> None:
    offset = file_clock(1_500_000_000.0, 60.0, 1_800_000_000.0)
    assert offset % 86400 == 0 and 0 <= 1_800_000_000.0 - (1_500_000_000.0 / 60 + offset) < 86400


def test_the_driver_replays_the_closes_with_their_times(
    arun: Callable[..., Any], keys: Keys, tmp_path: Path
) -> None:
    f = tmp_path / "TINY-1m.csv"
    f.write_text(
        "open_time,open,high,low,close,volume\n"
        "1700000000000,1,1,1,1.5,1\n1700000060000,1,1,1,1.6,1\n"
        "1700000120000,1,1,1,1.7,1\n"
    )

    async def body(r: Any) -> Any:
        sim = SimExchange(r, keys)
        await sim.list_symbol(SYM, step_size="0.001", min_qty="0.001", tick_size="0.1")
        stop = asyncio.Event()
        task = asyncio.create_task(drive_file(sim, [SYM], f, stop, speed=6000))  # 10 ms a candle
        pos = None
        for _ in range(200):
            pos = (await sim.fetch_positions([SYM])).get(SYM)
            if pos is not None and pos.mark_price == Decimal("1.7"):
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await sim.set_price(SYM, Decimal(2))  # a mark set by hand has no time of its own
        return pos, (await sim.fetch_positions([SYM]))[SYM]

    last, by_hand = arun(body)
    assert last.mark_price == Decimal("1.7") and last.mark_time is not None
    days = (last.mark_time - 1_700_000_120 / 6000) / 86400  # the last candle's time
    assert abs(days - round(days)) < 1e-9
    assert by_hand.mark_price == 2 and by_hand.mark_time is None
