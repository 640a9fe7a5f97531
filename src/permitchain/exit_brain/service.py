"""Exit-brain runner. The market-data loop is not in this build: the service keeps its
heartbeat and metrics so the chain's health checks see it; proposals come from
``permitchain propose`` and the Python API (``permitchain.exit_brain.api``)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from permitchain.keys import Keys
from permitchain.runtime.clock import Clock
from permitchain.runtime.service import ServiceRunner
from permitchain.settings import Settings

log = logging.getLogger("permitchain.exit_brain")


async def build_exit_brain(
    r: Redis, keys: Keys, settings: Settings, clock: Clock, port: int
) -> ServiceRunner:
    async def idle(stop: asyncio.Event) -> None:
        log.info(
            "exit-brain: market-data loop not enabled in this build; use `permitchain propose`"
        )
        await stop.wait()

    return ServiceRunner("exit-brain", r, keys, tasks=[idle], metrics_port=port)
