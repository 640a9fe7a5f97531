"""Service assembly: one function per service builds its runner from settings."""

from __future__ import annotations

from functools import partial

from permitchain.apply_layer.executor import Executor
from permitchain.apply_layer.planner_service import GROUP_PLANNER, Planner
from permitchain.errors import ConfigError
from permitchain.exchange.factory import check_exchange_settings, make_exchange
from permitchain.exit_brain.service import build_exit_brain
from permitchain.governor.service import Governor
from permitchain.keys import Keys
from permitchain.ops.canary_metrics import CANARY
from permitchain.position_brain.poll_thread import PollThread
from permitchain.position_brain.service import PositionBrain
from permitchain.runtime.clock import SystemClock
from permitchain.runtime.service import Consumer, ServiceRunner, by_symbol
from permitchain.settings import ApplyMode, Settings
from permitchain.store import async_client

DEFAULT_METRICS_PORT = {
    "exit-brain": 8042, "apply-layer": 8043, "governor": 8044, "position-brain": 8045,
}  # fmt: skip
SERVICE_NAMES = tuple(DEFAULT_METRICS_PORT)


def check_startup(settings: Settings) -> None:
    """Refuse configurations that cannot be run safely; the message names the variable.
    Run by ``run`` and ``up`` before anything starts, and by each service's build."""
    check_exchange_settings(settings)
    if settings.apply_mode is ApplyMode.PRODUCTION and not settings.signing_enabled:
        raise ConfigError(
            "APPLY_MODE=production needs PERMIT_KEY_GOVERNOR and PERMIT_KEY_P33 (permit signing)"
        )


def metrics_port(name: str, settings: Settings) -> int:
    return (
        settings.metrics_port if settings.metrics_port is not None else DEFAULT_METRICS_PORT[name]
    )


async def build(name: str, settings: Settings) -> ServiceRunner:
    if name not in DEFAULT_METRICS_PORT:
        raise ConfigError(f"unknown service {name!r}; one of: {', '.join(SERVICE_NAMES)}")
    check_startup(settings)
    r = async_client(settings.redis_url, max_connections=64)
    keys = Keys(settings.key_prefix)
    clock = SystemClock()
    port = metrics_port(name, settings)
    if name == "governor":
        gov = Governor(r, keys, settings, clock)
        return ServiceRunner(name, r, keys, consumers=gov.consumers(), tasks=[gov.watch_state],
                             metrics_port=port)  # fmt: skip
    if name == "position-brain":
        ex = make_exchange(settings, r, keys)
        poll_thread = PollThread(
            settings.redis_url, keys, clock, lambda pr: make_exchange(settings, pr, keys),
            allow_list=settings.allow_list, poll_interval_s=settings.poll_interval_s,
        )  # fmt: skip
        pb = PositionBrain(r, keys, settings, clock, ex, poll_thread=poll_thread)
        return ServiceRunner(name, r, keys, consumers=pb.consumers(), tasks=[pb.poller],
                             metrics_port=port, on_close=ex.close)  # fmt: skip
    if name == "apply-layer":
        ex = make_exchange(settings, r, keys)
        planner = Planner(r, keys, settings, clock)
        executor = Executor(r, keys, settings, clock, ex)
        try:
            await executor.recover_all()
        except BaseException:  # Redis down at start: run_service waits and builds again
            await ex.close()
            await r.aclose()
            raise
        return ServiceRunner(
            name, r, keys,
            consumers=[Consumer(keys.proposal_stream, GROUP_PLANNER, planner.handle,
                                partition=by_symbol),
                       executor.consumer()],
            tasks=[planner.sweep, executor.permit_events, executor.resolver.run,
                   partial(CANARY.export, r, keys)],
            metrics_port=port, on_close=ex.close,
        )  # fmt: skip
    return await build_exit_brain(r, keys, settings, clock, port)
