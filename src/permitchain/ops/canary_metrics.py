"""The last ``proof --canary`` run as metrics, for a canary run from a timer.

``proof --canary`` is a short-lived command, so it cannot serve ``/metrics`` itself. Each run
records its outcome in ``quantum:ops:canary:last`` (a HASH: ``ok``, ``ts``, ``duration_s``,
``last_ok_ts``, ``failed``); the apply layer reads it every ``EXPORT_EVERY_S`` and serves it
on its ``/metrics``. ``proof --canary --metrics-file PATH`` also writes the same series in
Prometheus' text format (atomically: a temporary file renamed), for node_exporter's textfile
collector. No series is shown before the first run (a missing canary is not a failed one).

Series: ``permitchain_canary_last_ok`` (1 passed, 0 failed),
``permitchain_canary_last_run_timestamp_seconds``,
``permitchain_canary_last_success_timestamp_seconds`` (absent until one passes) and
``permitchain_canary_last_duration_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import redis.exceptions
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from permitchain.contract.keys import Keys
from permitchain.ops.check import Check
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.canary")
EXPORT_EVERY_S = 5.0
#: A read that fails (Redis down, or the key of a wrong type): the last values stay.
READ_FAULTS: tuple[type[BaseException], ...] = (*REDIS_FAULTS, redis.exceptions.ResponseError)
#: (series, help, hash field)
SERIES = (
    ("permitchain_canary_last_ok", "1 when the last proof --canary passed, 0 when it failed", "ok"),
    ("permitchain_canary_last_run_timestamp_seconds", "When the last proof --canary ran", "ts"),
    (
        "permitchain_canary_last_success_timestamp_seconds",
        "When a proof --canary last passed",
        "last_ok_ts",
    ),
    (
        "permitchain_canary_last_duration_seconds",
        "How long the last proof --canary took",
        "duration_s",
    ),
)


def record_fields(checks: list[Check], started: float, now: float) -> dict[str, str]:
    """The canary's outcome as the hash's fields (``last_ok_ts`` only when it passed)."""
    ok = all(c.ok is not False for c in checks)
    out = {
        "ok": "1" if ok else "0",
        "ts": f"{now:.3f}",
        "duration_s": f"{now - started:.3f}",
        "failed": ",".join(c.name for c in checks if c.ok is False),
    }
    if ok:
        out["last_ok_ts"] = f"{now:.3f}"
    return out


async def record(r: AsyncRedis, keys: Keys, fields: dict[str, str]) -> None:
    await r.hset(keys.canary_last, mapping=fields)


async def read(r: AsyncRedis, keys: Keys) -> dict[str, str]:
    values = await r.hgetall(keys.canary_last)
    return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}


def families(values: dict[str, str]) -> Iterable[Metric]:
    for name, doc, field in SERIES:
        raw = values.get(field, "")
        with contextlib.suppress(ValueError):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(raw))
            yield family


def write_textfile(path: Path, values: dict[str, str]) -> None:
    """The series in Prometheus' text format, replaced atomically."""
    lines = []
    for family in families(values):
        lines += [f"# HELP {family.name} {family.documentation}", f"# TYPE {family.name} gauge"]
        lines += [f"{family.name} {s.value!r}" for s in family.samples]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


class CanaryCollector(Collector):
    """The last canary run as read from Redis by :meth:`export` (one dict swap per read)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.values: dict[str, str] = {}
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        yield from families(self.values)

    async def export(self, r: AsyncRedis, keys: Keys, stop: asyncio.Event) -> None:
        """Until ``stop``: read the last canary run every ``EXPORT_EVERY_S``."""
        while not stop.is_set():
            try:
                self.values = await read(r, keys)
            except READ_FAULTS as e:
                log.warning("canary metrics: %s: %s", keys.canary_last, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EXPORT_EVERY_S)


#: The apply layer's exporter (its ``/metrics``); no series until it has read a canary run.
CANARY = CanaryCollector()
