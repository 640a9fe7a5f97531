"""The poller on its own thread: plans wait for its first poll, it writes the snapshots,
takes refresh requests from the service's loop, stops with the service, and a failure
reaches the service's supervisor."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.position_brain.poll_thread import PollThread
from permitchain.runtime.clock import SystemClock
from tests.position_brain.test_poller import _list_many


async def until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    """Wait for a condition another thread brings about (checked every 10 ms)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


def test_the_thread_polls_refreshes_on_request_and_stops(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    syms = _list_many(r, keys, 30)
    threads: list[str] = []

    def make_exchange(pr: Any) -> SimExchange:
        threads.append(threading.current_thread().name)
        return SimExchange(pr, keys)

    async def body() -> None:
        pt = PollThread(
            redis_url, keys, SystemClock(), make_exchange, allow_list=[], poll_interval_s=60
        )
        stop = asyncio.Event()
        task = asyncio.create_task(pt.run(stop))
        await asyncio.sleep(0)  # run() has started
        await pt.first_poll(10)  # what a plan read right after the start waits for
        assert all(r.exists(keys.snapshot(s)) for s in syms)
        before = r.hget(keys.snapshot(syms[4]), "ts_epoch")
        r.hset(keys.sim_position(syms[4]), "amt", "0.5")  # a fill on the exchange
        pt.request(syms[4])  # from this (the service's) thread
        await until(lambda: r.hget(keys.snapshot(syms[4]), "position_amt") == "0.5", "refresh")
        assert r.hget(keys.snapshot(syms[5]), "ts_epoch") == before  # only that symbol
        stop.set()
        await asyncio.wait_for(task, 10)  # ends with the service

    asyncio.run(body())
    assert threads == ["p33-poller"]  # the exchange client was made on the poller's thread
    assert not any(t.name == "p33-poller" for t in threading.enumerate())


def test_a_poller_that_cannot_start_raises_to_the_supervisor(redis_url: str, keys: Keys) -> None:
    def broken(_pr: Any) -> SimExchange:
        raise RuntimeError("exchange client refused")

    async def body() -> None:
        pt = PollThread(redis_url, keys, SystemClock(), broken, allow_list=[], poll_interval_s=5)
        with pytest.raises(RuntimeError, match="exchange client refused"):
            await asyncio.wait_for(pt.run(asyncio.Event()), 10)

    asyncio.run(body())
