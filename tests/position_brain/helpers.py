"""Builders and waits shared by the position brain tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from permitchain.apply_layer.planner import steps_for
from permitchain.contract.keys import GROUP_P33, GROUP_P33_LEDGER, Keys
from permitchain.contract.models import (
    CLOSE_FRACTION,
    Action,
    Plan,
    PlanDecision,
    Result,
    ResultStatus,
    make_plan_id,
)
from permitchain.contract.settings import Settings
from permitchain.exchange.base import OrderInfo, PositionInfo, Side, SymbolFilters
from permitchain.exchange.sim import SimExchange
from permitchain.position_brain.service import PositionBrain
from permitchain.runtime.clock import Clock, SystemClock
from permitchain.runtime.service import ServiceRunner, ensure_group


def plan(
    symbol: str = "BTCUSDT",
    action: str = "PARTIAL_75",
    *,
    tranche: int = 0,
    created_at: float | None = None,
    **kw: Any,
) -> Plan:
    now = time.time() if created_at is None else created_at
    act = Action(action) if action in Action.__members__ else None
    base: dict[str, Any] = dict(
        plan_id=make_plan_id(symbol, action, 0, tranche),
        symbol=symbol,
        action=action,
        decision=PlanDecision.EXECUTE,
        reason_codes=("plan_ok",),
        kill_score=Decimal("0.6"),
        close_fraction=CLOSE_FRACTION.get(act, Decimal(0)) if act else Decimal(0),
        steps=steps_for(act, None) if act else (),
        mode="testnet",
        source="test",
        proposal_id="p",
        proposal_ts=now,
        created_at=now,
        expires_at=now + 30,
    )
    return Plan(**{**base, **kw})


def result(
    p: Plan,
    status: str = "filled",
    *,
    side: str = "SELL",
    filled: str = "0.046",
    ts: float | None = None,
) -> Result:
    st = ResultStatus(status)
    sent = st not in (ResultStatus.BLOCKED, ResultStatus.DRY_RUN)
    return Result(
        plan_id=p.plan_id,
        symbol=p.symbol,
        executed=st is ResultStatus.FILLED,
        status=st,
        order_id="42" if sent else "",
        client_order_id=f"pc-{p.plan_id}" if sent else "",
        side=side if sent else "",
        requested_qty=Decimal(filled),
        filled_qty=Decimal(filled)
        if st in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED)
        else Decimal(0),
        ts=time.time() if ts is None else ts,
    )


class CountingExchange:
    """Wraps an exchange and counts the calls the poller makes."""

    def __init__(self, inner: SimExchange) -> None:
        self.inner, self.name = inner, inner.name
        self.calls: dict[str, int] = {"fetch_positions": 0, "filters": 0}
        self.args: list[list[str] | None] = []  # symbols asked for, per positions call

    async def filters(self, symbols: Sequence[str] | None = None) -> dict[str, SymbolFilters]:
        self.calls["filters"] += 1
        return await self.inner.filters(symbols)

    async def fetch_positions(
        self, symbols: Sequence[str] | None = None
    ) -> dict[str, PositionInfo]:
        self.calls["fetch_positions"] += 1
        self.args.append(None if symbols is None else list(symbols))
        return await self.inner.fetch_positions(symbols)

    async def mark_prices(self, symbols: Sequence[str] | None = None) -> dict[str, Decimal]:
        return await self.inner.mark_prices(symbols)

    async def place_reduce_only_market(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        raise AssertionError("P3.3 never places orders")

    async def place_stop_market(
        self, symbol: str, side: Side, stop_price: Decimal, qty: Decimal, client_order_id: str
    ) -> OrderInfo:
        raise AssertionError("P3.3 never places orders")

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        return await self.inner.fetch_order(symbol, client_order_id)

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderInfo | None:
        raise AssertionError("P3.3 never cancels orders")

    async def open_orders(self, symbol: str | None = None) -> list[OrderInfo]:
        return await self.inner.open_orders(symbol)

    async def close(self) -> None:
        return None


def brain(
    r: Redis, keys: Keys, settings: Settings, *, clock: Clock | None = None, **overrides: Any
) -> tuple[PositionBrain, SimExchange]:
    sim = SimExchange(r, keys)
    s = settings.model_copy(update=overrides) if overrides else settings
    return PositionBrain(r, keys, s, clock or SystemClock(), sim), sim


@contextlib.asynccontextmanager
async def running(
    pb: PositionBrain, redis_url: str, *, poller: bool = True
) -> AsyncIterator[ServiceRunner]:
    """The brain's consumers (and poller) under the real runner, in this event loop."""
    from permitchain.store import async_client

    r = async_client(redis_url)
    await ensure_group(r, pb.keys.plan_stream, GROUP_P33)
    await ensure_group(r, pb.keys.result_stream, GROUP_P33_LEDGER)
    runner = ServiceRunner(
        "position-brain", r, pb.keys, consumers=pb.consumers(), tasks=[pb.poller] if poller else []
    )
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop.set()
        await asyncio.wait_for(task, 10)


async def next_permit(
    r: Redis, keys: Keys, plan_id: str, last_id: str = "0-0", timeout_s: float = 5.0
) -> tuple[dict[str, Any], str]:
    """Wait (XREAD BLOCK on the permit events) for P3.3's permit of ``plan_id``."""
    from permitchain.contract.models import parse_p33

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = await r.xread({keys.permit_event_stream: last_id}, block=200, count=100)
        for _stream, entries in resp or []:
            for entry_id, f in entries:
                last_id = entry_id
                if f["plan_id"] == plan_id and f["layer"] == "position-brain":
                    raw = await r.get(keys.permit_p33(plan_id))
                    return parse_p33(raw).body(), last_id
    raise TimeoutError(f"no P3.3 permit for {plan_id} in {timeout_s}s")
