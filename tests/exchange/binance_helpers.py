"""Helpers for the Binance adapter tests: an adapter pointed at the fake, and ``run``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from permitchain.exchange.binance import BinanceExchange
from tests.fakebinance import API_KEY, API_SECRET, FakeBinance

T = TypeVar("T")


def adapter(fake: FakeBinance, **kw: Any) -> BinanceExchange:
    opts: dict[str, Any] = {
        "demo": True,
        "base_url": fake.url,
        "timeout_s": 2.0,
        "rate_limit": False,
    }
    opts.update(kw)
    return BinanceExchange(opts.pop("api_key", API_KEY), opts.pop("api_secret", API_SECRET), **opts)


def run(fake: FakeBinance, body: Callable[[BinanceExchange], Awaitable[T]], **kw: Any) -> T:
    """Run ``body(exchange)`` on a new event loop with a fresh adapter, closed afterwards."""

    async def go() -> T:
        ex = adapter(fake, **kw)
        try:
            return await body(ex)
        finally:
            await ex.close()

    return asyncio.run(go())
