"""The governor's Redis work: reading its inputs, reserving slots, settling results.

* Inputs: trading state, the P3.3 snapshot (read with P3.3's own parser: a snapshot with an
  unreadable field is none, so qty and notional stay unknown), per-symbol counts and today's
  risk-increasing notional, in one pipeline. A trading state that cannot be read as one of
  the three names (wrong type, bad bytes, garbage) is HALTED; any other input key of the wrong
  Redis type is named in the input (the policy denies ``wrong_key_type``); only a lost
  connection raises (the plan stays pending and is retried).
* Reserve: ``governor_reserve.lua`` checks the limits again and takes the slot in one step.
* Settle: a result confirms (sorted set of executions, trimmed past one hour) or releases.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from permitchain.contract.keys import Keys
from permitchain.contract.models import fmt_decimal, parse_decimal
from permitchain.governor.policy import GovernorInput, TradingState, parse_trading_state
from permitchain.governor.rates import (
    WINDOW_5MIN_S,
    WINDOW_HOUR_S,
    RateCounts,
    Settlement,
    count_windows,
)
from permitchain.position_brain.state import parse_snapshot
from permitchain.store import AsyncRedis, is_wrong_type, wrong_type
from permitchain.store.raw import queue_raw
from permitchain.store.scripts import Scripts

EXECUTIONS_TTL_S = WINDOW_HOUR_S + 300
NOTIONAL_TTL_S = 2 * 86400
#: Counts that could not be read: as good as "at every limit" (fail closed).
UNREADABLE = 1 << 30


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def _notional_today(values: Any) -> Decimal:
    """Sum of today's risk-increasing grants; anything unreadable counts as over every cap."""
    try:
        return sum((parse_decimal(v, "notional") for v in values), Decimal(0))
    except ValueError:
        return Decimal(UNREADABLE)


def state_from_reply(reply: object) -> TradingState:
    """A GET reply (or the error a pipeline returned in its place) → trading state."""
    if isinstance(reply, BaseException):
        return TradingState.HALTED
    if isinstance(reply, bytes):
        try:
            reply = reply.decode("utf-8")
        except UnicodeDecodeError:
            return TradingState.HALTED
    return parse_trading_state(reply)


def queue_state_read(pipe: Any, keys: Keys) -> None:
    # Raw bytes: a value that is not UTF-8 must become HALTED, not a decoding crash.
    queue_raw(pipe, "GET", keys.trading_state)


async def read_trading_state(r: AsyncRedis, keys: Keys) -> TradingState:
    """The trading state, fail-closed: a wrong key type, bad bytes or an unknown value is
    HALTED (only a lost connection raises)."""
    pipe = r.pipeline(transaction=False)
    queue_state_read(pipe, keys)
    (reply,) = await pipe.execute(raise_on_error=False)
    return state_from_reply(reply)


class GovernorStore:
    def __init__(self, r: AsyncRedis, keys: Keys) -> None:
        self.redis, self.keys = r, keys
        self.scripts = Scripts(r)

    async def trading_state(self) -> TradingState:
        return await read_trading_state(self.redis, self.keys)

    async def read_input(self, symbol: str, now: float, *, windows: bool = True) -> GovernorInput:
        """What the policy decides from, in one round trip. ``windows=False`` (a policy that
        auto-approves never looks at them) skips the rate windows and today's notional;
        they then read as UNREADABLE, which would deny, never allow, were they consulted."""
        pipe = self.redis.pipeline(transaction=False)
        queue_state_read(pipe, self.keys)
        pipe.hgetall(self.keys.snapshot(symbol))
        if windows:
            pipe.zrange(self.keys.governor_executions(symbol), 0, -1, withscores=True)
            pipe.zrange(self.keys.governor_reservations(symbol), 0, -1, withscores=True)
            pipe.hgetall(self.keys.governor_notional(utc_day(now)))
        replies = await pipe.execute(raise_on_error=False)
        raw_state, snap, *rest = replies
        read = [
            None,
            (self.keys.snapshot(symbol), "hash"),
            (self.keys.governor_executions(symbol), "zset"),
            (self.keys.governor_reservations(symbol), "zset"),
            (self.keys.governor_notional(utc_day(now)), "hash"),
        ]
        wrong: list[str] = []  # (the windows are not read when they are not consulted)
        for what, reply in zip(read, replies, strict=False):
            if what is not None and is_wrong_type(reply):
                wrong.append(str(await wrong_type(self.redis, *what)))
        snapshot = None if isinstance(snap, BaseException) else parse_snapshot(snap)
        if not rest:
            counts, today = RateCounts(UNREADABLE, UNREADABLE), Decimal(UNREADABLE)
        else:
            executed, reserved, notionals = rest
            if isinstance(executed, BaseException) or isinstance(reserved, BaseException):
                counts = RateCounts(UNREADABLE, UNREADABLE)
            else:
                counts = count_windows((t for _, t in executed), (e for _, e in reserved), now)
            today = (
                Decimal(UNREADABLE)
                if isinstance(notionals, BaseException)
                else _notional_today(notionals.values())
            )
        return GovernorInput(
            trading_state=state_from_reply(raw_state),
            position_amt=snapshot.position_amt if snapshot else None,
            mark_price=snapshot.mark_price if snapshot else None,
            step_size=snapshot.step_size if snapshot else None,
            exec_last_hour=counts.last_hour,
            exec_last_5min=counts.last_5min,
            notional_today=today,
            wrong_types=tuple(wrong),
        )

    async def reserve(
        self, symbol: str, plan_id: str, now: float, ttl_s: float, max_5min: int, max_hour: int
    ) -> tuple[str, int, int]:
        """→ (verdict, count_5min, count_hour); verdict ``reserved``, ``already``,
        ``rate_limit_5min`` or ``rate_limit_hour`` (see the script's header)."""
        verdict, c5, ch = await self.scripts.governor_reserve(
            keys=[self.keys.governor_executions(symbol), self.keys.governor_reservations(symbol)],
            args=[
                plan_id,
                f"{now:.6f}",
                f"{ttl_s:.3f}",
                max_5min,
                max_hour,
                WINDOW_5MIN_S,
                WINDOW_HOUR_S,
            ],
        )
        return str(verdict), int(c5), int(ch)

    async def add_notional(self, plan_id: str, notional: Decimal, now: float) -> None:
        """Count a risk-increasing grant against today's DAILY_NOTIONAL_CAP (once per plan)."""
        key = self.keys.governor_notional(utc_day(now))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, plan_id, fmt_decimal(notional))  # per plan: a redelivery rewrites it
        pipe.expire(key, NOTIONAL_TTL_S)
        await pipe.execute()

    async def settle(self, symbol: str, plan_id: str, action: Settlement, ts: float) -> None:
        """Confirm (record the execution at the result's time) or release, atomically.
        Idempotent: a result seen twice changes nothing the second time."""
        executions = self.keys.governor_executions(symbol)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.governor_reservations(symbol), plan_id)
        if action is Settlement.CONFIRM:
            pipe.zadd(executions, {plan_id: ts})
            pipe.zremrangebyscore(executions, "-inf", ts - WINDOW_HOUR_S)
            pipe.expire(executions, EXECUTIONS_TTL_S)
        await pipe.execute()
