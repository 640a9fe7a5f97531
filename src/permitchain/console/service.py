"""``permitchain run console``: the HTTP server, the event broadcaster, the notifier.

A :class:`ServiceRunner` like every service (heartbeat ``console``, signals, metrics on
:8047 by default), whose tasks are the uvicorn server, the broadcaster's XREAD loop and,
with ``NOTIFY_URLS``, the notifier and its health watch. The listening socket is bound
before the runner starts, so once the heartbeat is there the console accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from permitchain.console import auth
from permitchain.console.api import create_app
from permitchain.console.context import Console
from permitchain.console.events import Broadcaster
from permitchain.console.notify import Notifier, NotifyPolicy, split_urls
from permitchain.contract.errors import ConfigError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.ops import health
from permitchain.runtime.service import ServiceRunner, Task
from permitchain.store import REDIS_FAULTS, AsyncRedis

log = logging.getLogger("permitchain.console")

NAME = "console"
DEFAULT_METRICS_PORT = 8047


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runner owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def console_url(s: Settings) -> str:
    host, port = auth.split_bind(s.console_bind)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
    return f"http://{shown}:{port}/"


def bind_socket(bind: str) -> socket.socket:
    host, port = auth.split_bind(bind)
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        raise ConfigError(f"CONSOLE_BIND: cannot listen on {bind}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


def health_watch(c: Console, notifier: Notifier) -> Task:
    async def watch_health(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                h = await health.gather(c.redis, c.keys, c.settings)
                problems = [str(p) for p in h.problems]
            except REDIS_FAULTS as e:
                problems = [f"redis: unreachable ({type(e).__name__})"]
            notifier.offer(notifier.policy.on_health(problems))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), c.settings.notify_health_every_s)

    return watch_health


def build_console(
    r: AsyncRedis, keys: Keys, s: Settings, metrics_port: int | None
) -> ServiceRunner:
    tokens = auth.load_tokens(s)
    auth.check_start(s, tokens)
    events = Broadcaster(r, keys)
    c = Console(redis=r, keys=keys, settings=s, tokens=tokens, events=events)
    tasks: list[Task] = [events.run]
    if s.notify_urls is not None:
        try:
            notifier = Notifier(
                split_urls(s.notify_urls.get_secret_value()), NotifyPolicy.from_settings(s)
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None

        def listen(stream: str, _entry_id: str, fields: dict[str, str]) -> None:
            policy = notifier.policy
            msgs = (
                policy.on_deadletter(fields)
                if stream == keys.deadletter
                else policy.on_audit(fields)
            )
            notifier.offer(msgs)

        events.listeners.append(listen)
        tasks += [notifier.run, health_watch(c, notifier)]
    listening = [bind_socket(s.console_bind)]
    app = create_app(c)

    async def http_server(stop: asyncio.Event) -> None:
        """Serve until ``stop``. A server that ends on its own raises (the runner restarts
        this task after a backoff, on a new socket if uvicorn closed the old one)."""
        if listening[0].fileno() < 0:
            listening[0] = bind_socket(s.console_bind)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        serving = asyncio.ensure_future(server.serve(sockets=[listening[0]]))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not serving.done():
            server.should_exit = True
            await serving
            return
        serving.result()
        raise RuntimeError("console: the HTTP server stopped on its own")

    tasks.insert(0, http_server)
    log.info(
        "console: %s (reads %s, writes %s)",
        console_url(s),
        "public" if s.console_public_read or not tokens else "need a token",
        "need a token" if tokens else "refused: no token",
    )
    return ServiceRunner(NAME, r, keys, tasks=tasks, metrics_port=metrics_port)
