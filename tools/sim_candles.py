"""Write the simulated market's price walk (``exchange.sim_prices.price_path``, the walk
``permitchain up`` drives, one step a second) as 1-second candles, for ``permitchain replay``.
Not a test; a tool for the exit brain's calibration (docs/exit-brain.md).

    .venv/bin/python tools/sim_candles.py /tmp/sim-1s.csv --hours 24 --seed 7
    permitchain replay /tmp/sim-1s.csv --entries every:30m:alternate --summary
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from itertools import islice
from pathlib import Path

from permitchain.exchange.sim_prices import price_path

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start", default="100")
    a = ap.parse_args()
    n = int(a.hours * 3600)
    prev = Decimal(a.start)
    with a.out.open("w") as fh:
        fh.write("open_time,open,high,low,close,volume\n")
        for i, step in enumerate(islice(price_path(prev, a.seed), n)):
            c = step.price
            fh.write(f"{START_MS + 1000 * i},{prev},{max(prev, c)},{min(prev, c)},{c},1\n")
            prev = c
    print(f"{a.out}: {n} candles of 1 s (seed {a.seed})")


if __name__ == "__main__":
    main()
