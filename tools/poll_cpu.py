"""In-process CPU harness for P3.3's snapshot poller: one full poll of N symbols on the
simulated exchange, against a private Redis, CPU time (time.process_time) per poll. Not a
test; a measuring tool.

    redis-server --port 7420 --save '' --daemonize yes
    .venv/bin/python tools/poll_cpu.py --url redis://127.0.0.1:7420/0 -n 4775 --reps 6
    [--profile]  (cProfile of one steady poll, by tottime)
    redis-cli -p 7420 shutdown nosave

The first poll writes every snapshot whole (and initialises nothing: the symbols are seeded
as the bench seeds them, ledgers included); the polls after it are the steady state, where
an unchanged position gets only its new time. "whole" forces one more poll of whole writes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
import uuid

import uvloop

from permitchain.bench.load import bench_symbols, seed
from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.runtime.clock import SystemClock
from permitchain.store import async_client


async def main(url: str, n: int, reps: int, profile: bool) -> None:
    keys = Keys(f"pollcpu{uuid.uuid4().hex[:8]}")
    r = async_client(url)
    try:
        syms = bench_symbols(n)
        await seed(r, keys, syms)
        poller = SnapshotPoller(
            r, keys, SimExchange(r, keys), SystemClock(), allow_list=syms, poll_interval_s=5
        )
        t0 = time.process_time()
        await poller.poll_once()
        first = time.process_time() - t0
        poller._whole.clear()
        t0 = time.process_time()
        await poller.poll_once()
        whole = time.process_time() - t0
        steady: list[float] = []
        for i in range(reps):
            pr = cProfile.Profile() if profile and i == reps // 2 else None
            t0 = time.process_time()
            if pr is not None:
                pr.enable()
            await poller.poll_once()
            if pr is not None:
                pr.disable()
                out = io.StringIO()
                pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(25)
                print(out.getvalue())
            else:
                steady.append(time.process_time() - t0)
        print(
            f"{n} symbols, CPU ms per full poll: first {first * 1000:.1f}, "
            f"all whole {whole * 1000:.1f}, steady median {statistics.median(steady) * 1000:.1f} "
            f"(min {min(steady) * 1000:.1f}, max {max(steady) * 1000:.1f}, {len(steady)} polls)"
        )
        await r.delete(*[k async for k in r.scan_iter(match=f"{keys.prefix}:*", count=5000)])
    finally:
        await r.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="redis://127.0.0.1:7420/0")
    ap.add_argument("-n", type=int, default=4775)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    uvloop.run(main(a.url, a.n, a.reps, a.profile))
