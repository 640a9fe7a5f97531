"""Service assembly: one function per service builds its runner from settings."""

from __future__ import annotations

import functools
import logging

from permitchain.apply_layer.executor import Executor
from permitchain.apply_layer.planner_service import GROUP_PLANNER, Planner
from permitchain.apply_layer.reconcile import Reconciler
from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import Settings
from permitchain.exchange.factory import check_exchange_settings, make_exchange
from permitchain.exchange.stream import make_stream
from permitchain.exit_brain.service import build_exit_brain
from permitchain.governor.service import Governor
from permitchain.keyfiles import check_custody
from permitchain.ops.canary_metrics import CANARY
from permitchain.position_brain.poll_thread import PollThread
from permitchain.position_brain.service import PositionBrain
from permitchain.runtime.clock import SystemClock
from permitchain.runtime.service import Consumer, ServiceRunner, Task, by_symbol
from permitchain.store import async_client, transport_name

DEFAULT_METRICS_PORT = {
    "exit-brain": 8042,
    "apply-layer": 8043,
    "governor": 8044,
    "position-brain": 8045,
}
SERVICE_NAMES = tuple(DEFAULT_METRICS_PORT)
log = logging.getLogger(__name__)
#: The operator console (permitchain.console): run and started by `up` like the others, but
#: not on the order path (stopping it changes nothing for trading).
CONSOLE = "console"
RUNNABLE = (*SERVICE_NAMES, CONSOLE)


def check_startup(settings: Settings, service: str | None = None) -> None:
    """Refuse configurations that cannot be run safely; the message names the variable or
    file. ``service``: the one about to start (None: the whole chain, ``up``); key custody
    rules in :func:`permitchain.keyfiles.check_custody`. Run by ``run`` and ``up`` before
    anything starts, and by each service's build."""
    check_exchange_settings(settings)
    check_custody(settings, service)


def metrics_port(name: str, settings: Settings) -> int:
    return (
        settings.metrics_port if settings.metrics_port is not None else DEFAULT_METRICS_PORT[name]
    )


async def build(name: str, settings: Settings) -> ServiceRunner:
    if name not in RUNNABLE:
        raise ConfigError(f"unknown service {name!r}; one of: {', '.join(RUNNABLE)}")
    check_startup(settings, name)
    r = async_client(
        settings.redis_url, max_connections=64, transport=settings.redis_transport.value
    )
    log.info("%s: redis transport %s", name, transport_name(r))
    keys = settings.keys
    clock = SystemClock()
    if name == CONSOLE:
        from permitchain.console.service import DEFAULT_METRICS_PORT as CONSOLE_PORT  # noqa: PLC0415 - web stack only here
        from permitchain.console.service import build_console  # noqa: PLC0415

        port = CONSOLE_PORT if settings.metrics_port is None else settings.metrics_port
        return build_console(r, keys, settings, port)
    port = metrics_port(name, settings)
    if name == "governor":
        gov = Governor(r, keys, settings, clock)
        return ServiceRunner(
            name, r, keys, consumers=gov.consumers(), tasks=[gov.watch_state], metrics_port=port
        )
    if name == "position-brain":
        ex = make_exchange(settings, r, keys)
        poll_thread = PollThread(
            settings.redis_url,
            keys,
            clock,
            lambda pr: make_exchange(settings, pr, keys),
            allow_list=settings.allow_list,
            poll_interval_s=settings.poll_interval_s,
            transport=settings.redis_transport.value,
            make_stream=lambda pr: make_stream(settings, pr, keys),
            push_touch_s=settings.push_touch_s,
        )
        pb = PositionBrain(r, keys, settings, clock, ex, poll_thread=poll_thread)
        return ServiceRunner(
            name,
            r,
            keys,
            consumers=pb.consumers(),
            tasks=[pb.poller],
            metrics_port=port,
            on_close=ex.close,
        )
    if name == "apply-layer":
        ex = make_exchange(settings, r, keys)
        planner = Planner(r, keys, settings, clock)
        executor = Executor(r, keys, settings, clock, ex)
        stream = make_stream(settings, r, keys)
        reconciler = Reconciler(r, keys, ex, executor.store, clock, every_s=settings.reconcile_s)
        executor.reconciler = reconciler

        async def close() -> None:
            await ex.close()
            if stream is not None:
                await stream.close()

        try:
            await executor.recover_all()
            await reconciler.check_once()  # before the first plan: a mode changed while down
        except BaseException:  # Redis down at start: run_service waits and builds again
            await close()
            await r.aclose()
            raise
        tasks: list[Task] = [
            planner.sweep,
            executor.permit_events,
            executor.resolver.run,
            reconciler.run,
            functools.partial(CANARY.export, r, keys),
        ]
        if stream is not None:
            tasks.append(
                functools.partial(
                    executor.resolver.run_pushed, stream=stream, on_reconnect=reconciler.request
                )
            )
        return ServiceRunner(
            name,
            r,
            keys,
            consumers=[
                Consumer(keys.proposal_stream, GROUP_PLANNER, planner.handle, partition=by_symbol),
                *executor.consumers(),
            ],
            tasks=tasks,
            metrics_port=port,
            on_close=close,
        )
    return await build_exit_brain(r, keys, settings, clock, port)
