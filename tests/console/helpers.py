"""Shared by the console tests: the app in-process (httpx over ASGI) on the session's server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from permitchain.console import auth
from permitchain.console.api import create_app
from permitchain.console.context import Console
from permitchain.console.events import Broadcaster
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.store import async_client

T = TypeVar("T")
TOKEN = "alice:0123456789abcdef0123"
SECRET = "0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_process(
    redis_url: str, prefix: str, fn: Callable[[httpx.AsyncClient, Any], Awaitable[T]], **kw: Any
) -> T:
    """Run ``fn(client, redis)`` against a fresh app (settings ``kw``) in a fresh loop."""
    settings = Settings(redis_url=redis_url, key_prefix=prefix, **{"console_token": TOKEN, **kw})

    async def main() -> T:
        r = async_client(redis_url)
        keys = Keys(prefix)
        c = Console(
            redis=r,
            keys=keys,
            settings=settings,
            tokens=auth.load_tokens(settings, {}),
            events=Broadcaster(r, keys),
        )
        transport = httpx.ASGITransport(app=create_app(c))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
                return await fn(http, r)
        finally:
            await r.aclose()

    return asyncio.run(main())
