"""The garbage collector of a latency-sensitive process: fewer, cheaper collections.

CPython's cyclic collector runs a young collection every 700 net allocations of container
objects and, every so often, a full one over the whole heap. A service handling plans
allocates a few hundred containers per plan; with the defaults the objects of the plans in
flight survive the young collections, are promoted, and soon trigger full collections. In
the bench (docs/performance.md) the apply layer ran a full collection every ~3 s under load
at 50-130 ms each, and young ones of ~5 ms hundreds of times a minute: every plan in
flight waited for them, and they were the chain's latency tail.

So each service (and the bench) collects young objects every :data:`GEN0_THRESHOLD`
allocations, by which time the plans that made them are done and the objects freed by
reference counting, and after start-up moves everything it has built so far (modules,
clients, settings) out of the collector's reach with ``gc.freeze()``: a full collection
then walks only what was made since. Collections still run: garbage in reference cycles is
freed, a little later. ``permitchain_gc_pause_seconds`` shows what the collections cost.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

#: Net container allocations between young collections (CPython's default: 700).
GEN0_THRESHOLD = 50_000
#: Young collections between middle-generation collections (default 10).
GEN1_THRESHOLD = 20
#: Middle-generation collections between full ones (default 10; a full collection also
#: waits until the objects promoted since the last one are a quarter of the heap).
GEN2_THRESHOLD = 10

GC_PAUSE = Histogram(
    "permitchain_gc_pause_seconds",
    "Garbage collections, by generation, and how long each took",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
_started: list[float] = []


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _started[0])


def tune() -> None:
    """This process's collection thresholds, and the pause histogram (once)."""
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)


def freeze() -> int:
    """After start-up: collect once, then keep every object alive now out of later
    collections (they stay alive; they are only not walked again). Returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
