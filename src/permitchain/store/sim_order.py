"""The simulated exchange's market order, and the trigger of its stop, as one step each:
``sim_order.lua`` decides from the server's state (the order record of the client order id,
the filters, the position; the stop) and records the order, the position's new amount and
the stop's status together; this module gathers its arguments, runs it and reads its reply.

Two ways to run it, chosen once per client by its class (:func:`_way_for`):

- a single server (or Sentinel): the config hash (``quantum:sim:config``) and the fills
  stream (``quantum:sim:fills``) are in the script's KEYS too. The script reads the fault
  mode and ``latency_ms`` itself and adds the fill record in the same atomic step, so an
  order is one EVALSHA and no order is recorded without its fill record. Injected latency:
  the script answers ``delay`` without writing; the call sleeps and runs it again, marked
  as served, under the config as it is then.
- a Redis Cluster: both keys are outside the symbol's hash slot. The config is read first
  (its latency slept, its mode passed to the script) and the fill record added after the
  script, once, by the call whose script recorded the fill.

The exchange's types and errors are the caller's (``permitchain.exchange.sim``): a reply
here is what the script said, as data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from redis.exceptions import ResponseError

from permitchain.contract.errors import StoreError
from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal
from permitchain.store.client import AsyncRedis, atranslate, is_cluster
from permitchain.store.scripts import scripts_for

FILLS_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class SimOrderReply:
    """What the script decided. ``outcome``: ``ok`` (recorded; ``fill`` the fill record, {}
    when not filled), ``exists`` (the client order id was taken: ``order`` is that order),
    ``reject`` (``code`` and ``detail``: the min and max quantity of a -4003), ``timeout``
    (nothing placed); of a trigger: ``stop`` (``order``: the stop as it now stands) or
    ``none`` (nothing to do). ``mode``: the fault mode the order was decided under."""

    outcome: str
    order: dict[str, str] = field(default_factory=dict)
    fill: dict[str, str] = field(default_factory=dict)
    code: int = 0
    detail: tuple[str, ...] = ()
    mode: str = "fill"


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash from a script's name, value list."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def parse_reply(res: list[Any], mode: str = "fill") -> SimOrderReply:
    """The script's reply as a :class:`SimOrderReply` (decided under ``mode``, unless the
    reply names its mode: ``['mode', <mode>, <reply>]``)."""
    outcome = res[0]
    if outcome == "mode":
        return parse_reply(res[2], res[1])
    if outcome in ("ok", "stop"):
        return SimOrderReply(outcome, order=pairs(res[1]), fill=pairs(res[2]), mode=mode)
    if outcome == "exists":
        return SimOrderReply("exists", order=pairs(res[1]), mode=mode)
    if outcome == "reject":
        return SimOrderReply("reject", code=int(res[1]), detail=tuple(res[2:]), mode=mode)
    return SimOrderReply(outcome, mode=mode)


async def read_config(redis: AsyncRedis, keys: Keys) -> dict[str, str]:
    """The fault config (``quantum:sim:config``), its injected latency slept."""
    async with atranslate():
        cfg: dict[str, str] = await redis.hgetall(keys.sim_config)
    latency = int(cfg.get("latency_ms") or 0)
    if latency:
        await asyncio.sleep(latency / 1000)
    return cfg


async def sim_market_order(
    redis: AsyncRedis,
    keys: Keys,
    symbol: str,
    side: str,
    qty: Decimal,
    client_order_id: str,
    *,
    mode: str | None,
    ttl_s: int,
) -> SimOrderReply:
    """Run ``sim_order.lua`` for one reduce-only market order under the fault ``mode``
    (``fill`` for a fill inside the exchange; None: the config's mode, after its injected
    latency), its fill record added to the fills stream. Redis errors are raised translated
    (``StoreError``)."""
    request = [symbol, client_order_id, side, fmt_decimal(qty)]
    return await _way_for(redis).market(redis, keys, request, mode, ttl_s)


async def sim_stop_trigger(
    redis: AsyncRedis, keys: Keys, symbol: str, stop_id: str, *, ttl_s: int
) -> SimOrderReply:
    """Run ``sim_order.lua``'s trigger of the symbol's live stop ``stop_id`` (its fill is the
    order ``<stop_id>-fill``), its fill record added to the fills stream."""
    fill_id = f"{stop_id}-fill"
    args = [ttl_s, _now(), symbol, fill_id, stop_id, "", "trigger"]
    stop_keys = [keys.sim_stop(symbol), keys.sim_order(symbol, stop_id)]
    return await _way_for(redis).run(redis, keys, symbol, fill_id, args, stop_keys)


def _now() -> str:
    return f"{time.time():.6f}"


def _order_keys(keys: Keys, symbol: str, client_order_id: str) -> list[str]:
    """The script's KEYS[1..4]: the symbol's position, order, order sequence and filters."""
    return [
        keys.sim_position(symbol),
        keys.sim_order(symbol, client_order_id),
        keys.sim_order_seq(symbol),
        keys.sim_filters(symbol),
    ]


async def _script(redis: AsyncRedis, script_keys: list[str], args: list[Any]) -> list[Any]:
    """One run of the script; data it cannot read (a wrong type, not a decimal) raised as a
    ``StoreError``."""
    try:
        res: list[Any] = await scripts_for(redis).sim_order(keys=script_keys, args=args)
    except ResponseError as e:
        raise StoreError(f"redis: {e}") from e
    return res


@dataclass(frozen=True, slots=True)
class _Way:
    """How the step runs on a kind of client: ``market`` (an order: request = symbol,
    client order id, side, quantity) and ``run`` (the script with its arguments, the fill
    record added)."""

    market: Callable[[AsyncRedis, Keys, list[str], str | None, int], Awaitable[SimOrderReply]]
    run: Callable[[AsyncRedis, Keys, str, str, list[Any], list[str]], Awaitable[SimOrderReply]]


async def _single_market(
    redis: AsyncRedis, keys: Keys, request: list[str], mode: str | None, ttl_s: int
) -> SimOrderReply:
    """An order on a single server: the config read by the script (mode None), one run; a
    second run after its ``delay`` answer is slept."""
    script_keys = [*_order_keys(keys, request[0], request[1]), keys.sim_config, keys.sim_fills]
    served = ""
    while True:
        args = [ttl_s, _now(), *request, mode or "config", served, FILLS_MAXLEN]
        async with atranslate():
            res = await _script(redis, script_keys, args)
        if res[0] != "delay":
            return parse_reply(res)
        await asyncio.sleep(int(res[1]) / 1000)
        served = "1"


async def _single_run(
    redis: AsyncRedis,
    keys: Keys,
    symbol: str,
    client_order_id: str,
    args: list[Any],
    extra_keys: list[str],
) -> SimOrderReply:
    """The script on a single server, the fills stream in its KEYS: it adds the record."""
    script_keys = [*_order_keys(keys, symbol, client_order_id), *extra_keys, keys.sim_fills]
    async with atranslate():
        return parse_reply(await _script(redis, script_keys, [*args, "", FILLS_MAXLEN]))


async def _cluster_market(
    redis: AsyncRedis, keys: Keys, request: list[str], mode: str | None, ttl_s: int
) -> SimOrderReply:
    """An order on a Cluster: the config read first (mode None), then the script."""
    if mode is None:
        mode = (await read_config(redis, keys)).get("order_mode") or "fill"
    args = [ttl_s, _now(), *request, mode]
    return await _cluster_run(redis, keys, request[0], request[1], args, [], mode=mode)


async def _cluster_run(
    redis: AsyncRedis,
    keys: Keys,
    symbol: str,
    client_order_id: str,
    args: list[Any],
    extra_keys: list[str],
    *,
    mode: str = "fill",
) -> SimOrderReply:
    """The script on the symbol's keys (and ``extra_keys``), decided under ``mode``, then the
    fill record added."""
    script_keys = [*_order_keys(keys, symbol, client_order_id), *extra_keys]
    async with atranslate():
        reply = parse_reply(await _script(redis, script_keys, args), mode)
        if reply.fill:
            await redis.xadd(keys.sim_fills, reply.fill, maxlen=FILLS_MAXLEN, approximate=True)
    return reply


_SINGLE = _Way(_single_market, _single_run)
_CLUSTER = _Way(_cluster_market, _cluster_run)


def _way_for(redis: AsyncRedis) -> _Way:
    """The way the step runs on ``redis``: by its class (a Cluster client, or not)."""
    return _CLUSTER if is_cluster(redis) else _SINGLE
