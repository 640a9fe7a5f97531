"""Load generation and measurement against a running chain.

Each proposal is a distinct decision (its own tranche number), so each becomes its own
plan. Proposals are offered open-loop at a fixed rate (latency runs) or with a bounded
window of plans in flight (throughput runs); results are read from the result stream as
they arrive. A plan counts as *verified* when its result says filled, its filled quantity
equals P3.3's safe_close_qty and a fill with its client order id exists on the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.contract.models import Proposal, float_or_none, make_plan_id
from permitchain.ops import reads as rd
from permitchain.store import AsyncRedis

#: How often the bench reads the order records of plans done since the last read.
ORDER_CHECK_EVERY_S = 1.0
#: Large enough for ~120 quarter-closes per symbol before the step (0.001) is reached.
BENCH_POSITION = Decimal(10) ** 12


def bench_symbols(n: int) -> list[str]:
    return [f"BENCH{i:04d}USDT" for i in range(n)]


async def seed(r: AsyncRedis, keys: Keys, symbols: list[str]) -> None:
    """Large positions whose ledgers agree with the exchange."""
    pipe = r.pipeline(transaction=False)
    for s in symbols:
        pipe.hset(
            keys.sim_filters(s),
            mapping={
                "step_size": "0.001",
                "min_qty": "0.001",
                "max_qty": "1000000000000",
                "min_notional": "0",
                "tick_size": "0.01",
            },
        )
        pipe.sadd(keys.sim_symbols, s)
        pipe.hset(
            keys.sim_position(s),
            mapping={"amt": str(BENCH_POSITION), "entry_price": "100", "mark_price": "101"},
        )
        pipe.hset(
            keys.ledger(s),
            mapping={
                "last_known_amt": str(BENCH_POSITION),
                "last_known_side": "LONG",
                "epoch": "0",
            },
        )
    await pipe.execute()


@dataclass
class Sample:
    plan_id: str
    symbol: str
    sent_at: float
    done_at: float | None = None
    result: dict[str, str] = field(default_factory=dict)
    #: the exchange's order record for its client order id, read soon after the result
    order: dict[str, str] | None = None
    #: server time (s) at which the result went onto the result stream: the exec record's
    #: ``updated_at``, written by the same atomic script that added the result
    on_stream_at: float | None = None


class Load:
    """Submits proposals and collects their results."""

    def __init__(self, r: AsyncRedis, keys: Keys, symbols: list[str], run_id: int) -> None:
        self.redis, self.keys, self.symbols = r, keys, symbols
        self.run_id = run_id
        self.samples: dict[str, Sample] = {}
        self.seq = 0
        self.last_result: dict[str, str] = {}
        self.done = asyncio.Event()
        self.expected = 0
        self.n_completed = 0
        self.unchecked: list[Sample] = []  # done, order record not read yet

    def _proposal(self) -> tuple[Proposal, str]:
        self.seq += 1
        sym = self.symbols[self.seq % len(self.symbols)]
        tranche = self.run_id * 10_000_000 + self.seq
        p = Proposal(
            proposal_id=f"b{self.run_id}-{self.seq}",
            symbol=sym,
            action="PARTIAL_25",
            kill_score=Decimal("0.9"),
            position_epoch=0,
            tranche=tranche,
            ts_epoch=time.time(),
            source="bench",
        )
        return p, make_plan_id(sym, "PARTIAL_25", 0, tranche)

    async def submit(self, n: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        now = time.time()
        for _ in range(n):
            p, pid = self._proposal()
            p = p.model_copy(update={"ts_epoch": now})
            pipe.xadd(self.keys.proposal_stream, p.to_fields(), maxlen=200_000, approximate=True)
            self.samples[pid] = Sample(pid, p.symbol, now)
        await pipe.execute()

    async def start_reader(self) -> None:
        for stream in self.keys.result_streams:
            info = (
                await self.redis.xinfo_stream(stream) if await self.redis.exists(stream) else None
            )
            self.last_result[stream] = (info or {}).get("last-generated-id") or "0-0"

    async def read_results(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # read raw, each entry decoded (bad bytes escaped): an entry another writer added
            # that is not UTF-8 is no plan of ours, never a failed read
            resp = await rd.xread(self.redis, self.last_result, count=5000, block_ms=200)
            now = time.time()
            for stream, entries in resp:
                for entry_id, f in entries:
                    self.last_result[stream] = entry_id
                    s = self.samples.get(f.get("plan_id", ""))
                    if s is not None and s.done_at is None:
                        s.done_at, s.result = now, f
                        self.n_completed += 1
                        self.unchecked.append(s)
            if self.expected and self.completed() >= self.expected:
                self.done.set()

    def completed(self) -> int:
        return self.n_completed

    async def check_orders(self, stop: asyncio.Event, every_s: float = ORDER_CHECK_EVERY_S) -> None:
        """Read the order record of each plan soon after its result (every ``every_s``, one
        pipeline), so that verification does not depend on how long the exchange keeps its
        orders (EXEC_RECORD_TTL_S) however long the run."""
        while True:
            batch, self.unchecked = self.unchecked, []
            await read_orders(self.redis, self.keys, batch)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def offered_rate(self, rate: float, duration_s: float) -> None:
        """Open loop: ``rate`` proposals per second for ``duration_s``, in 1 ms ticks."""
        total = int(rate * duration_s)
        self.expected = len(self.samples) + total
        start = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            if due > sent:
                await self.submit(due - sent)
                sent = due
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))

    async def closed_loop(self, window: int, duration_s: float) -> float:
        """Keep ``window`` plans in flight for ``duration_s``; returns the elapsed time."""
        start = time.perf_counter()
        while time.perf_counter() - start < duration_s:
            in_flight = len(self.samples) - self.completed()
            if in_flight < window:
                await self.submit(min(500, window - in_flight))
            else:
                await asyncio.sleep(0.001)
        self.expected = len(self.samples)
        return time.perf_counter() - start


async def read_orders(r: AsyncRedis, keys: Keys, samples: list[Sample]) -> None:
    """Fill in each sample's order record (by its result's client order id) and the moment
    its result went onto the stream (its exec record's ``updated_at``)."""
    for i in range(0, len(samples), 5_000):
        chunk = samples[i : i + 5_000]
        pipe = r.pipeline(transaction=False)
        for s in chunk:
            pipe.hgetall(keys.sim_order(s.symbol, s.result.get("client_order_id", "")))
            pipe.hget(keys.exec_record(s.plan_id), "updated_at")
        replies = await pipe.execute()
        for s, order, at in zip(chunk, replies[::2], replies[1::2], strict=True):
            s.order = order
            s.on_stream_at = float_or_none(at)


async def verify(r: AsyncRedis, keys: Keys, samples: list[Sample]) -> dict[str, Any]:
    """Every plan: its result says filled, filled == P3.3's safe qty (the requested qty), and
    the exchange's order record for its client order id is FILLED for that quantity. Double
    fills: client order ids with more than one entry on the exchange's fill stream (the
    stream is capped, so on a long run this looks at its latest entries only; the order
    record, one per client order id, is the check that covers the whole run)."""
    fills: dict[str, int] = {}
    last = "0-0"
    while True:
        batch = await r.xrange(
            keys.sim_fills, min=f"({last}" if last != "0-0" else "-", count=10_000
        )
        if not batch:
            break
        for entry_id, f in batch:
            fills[f["client_order_id"]] = fills.get(f["client_order_id"], 0) + 1
            last = entry_id
    done = [s for s in samples if s.done_at is not None]
    await read_orders(r, keys, [s for s in done if s.order is None])
    bad: list[str] = []
    for s in done:
        f, order = s.result, s.order or {}
        ok = (
            f.get("status") == "filled"
            and f.get("executed") == "true"
            and f.get("filled_qty") == f.get("requested_qty")
            and order.get("status") == "FILLED"
            and order.get("filled_qty") == f.get("filled_qty")
        )
        if not ok:
            bad.append(f"{s.plan_id}:{f.get('status')}:{f.get('reason')}")
    doubles = sum(1 for n in fills.values() if n > 1)
    missing = len(samples) - len(done)
    return {
        "plans": len(samples),
        "verified": len(samples) - missing - len(bad),
        "missing": missing,
        "failed": len(bad),
        "double_fills": doubles,
        "failures_sample": bad[:5],
    }
