"""A running chain with its console (separate processes), and an SSE reader for tests."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from permitchain.chain import Chain
from permitchain.services import CONSOLE, SERVICE_NAMES
from tests.console.helpers import AUTH, TOKEN, free_port


@dataclass
class Live:
    chain: Chain
    url: str

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, timeout=30, **kw)

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=AUTH, timeout=60, **kw)


@pytest.fixture
def live_factory(chain_factory: Callable[..., Chain]) -> Callable[..., Live]:
    def make(*, services: tuple[str, ...] = SERVICE_NAMES, **env: str) -> Live:
        port = free_port()
        chain = chain_factory(CONSOLE_BIND=f"127.0.0.1:{port}", CONSOLE_TOKEN=TOKEN, **env)
        chain.start(services)
        chain.start_service(CONSOLE)
        chain.wait_ready([*services, CONSOLE], timeout_s=60)
        return Live(chain, f"http://127.0.0.1:{port}")

    return make


@dataclass
class Event:
    received: float
    id: str
    type: str
    data: dict[str, Any]


class SSEReader:
    """Reads ``/api/events`` in a thread; each event lands in ``events`` (a queue)."""

    def __init__(self, url: str, last_event_id: str | None = None, compact: bool = False) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.connected = threading.Event()
        self.closed = False
        headers = {**AUTH, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        self.client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self.thread = threading.Thread(
            target=self._run,
            args=(f"{url}/api/events?compact={str(compact).lower()}", headers),
            daemon=True,
        )
        self.thread.start()
        assert self.connected.wait(15), "no SSE connection"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self.client.stream("GET", url, headers=headers) as res:
                assert res.status_code == 200, res.read()
                block: dict[str, str] = {}
                for line in res.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    if line == "":
                        if "data" in block:
                            self.events.put(
                                Event(
                                    time.time(),
                                    block.get("id", ""),
                                    block.get("event", "message"),
                                    json.loads(block["data"]),
                                )
                            )
                        block = {}
                        continue
                    name, _, value = line.partition(": ")
                    if name in ("id", "event", "data"):
                        block[name] = value
        except Exception:  # closing the client ends the read with whatever it raises
            if not self.closed:
                raise

    def until(self, cond: Callable[[Event], bool], timeout_s: float = 20.0) -> list[Event]:
        """Events up to and including the first for which ``cond`` holds."""
        out: list[Event] = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no such event; got {[(e.type, e.data.get('decision')) for e in out]}"
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            out.append(e)
            if cond(e):
                return out

    def close(self) -> None:
        self.closed = True
        self.client.close()


@pytest.fixture
def sse() -> Iterator[Callable[..., SSEReader]]:
    readers: list[SSEReader] = []

    def make(url: str, last_event_id: str | None = None, compact: bool = False) -> SSEReader:
        reader = SSEReader(url, last_event_id, compact)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
