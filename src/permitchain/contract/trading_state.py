"""The trading state (docs/design.md §2, ``quantum:trading_state``) and its fail-closed read.

``ACTIVE`` (or the key absent) lets every plan through; ``REDUCING`` only reduce-only plans;
``HALTED`` none. Anything else the key holds (bytes that are not UTF-8, lower case, whitespace,
garbage, another Redis type) reads as ``HALTED``: the governor, the executor, the operator
commands and ``status`` all read it here, the one way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from permitchain.store.raw import queue_raw

if TYPE_CHECKING:
    from permitchain.contract.keys import Keys
    from permitchain.store import AsyncRedis


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


def parse_trading_state(raw: object) -> TradingState:
    """Absent → ACTIVE. Anything but the three exact names (bytes, lower case, whitespace,
    garbage) → HALTED: the original kill switch compared bytes to str and could never fire."""
    if raw is None:
        return TradingState.ACTIVE
    if isinstance(raw, str) and raw in TradingState.__members__:
        return TradingState(raw)
    return TradingState.HALTED


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
    """Queue the trading state's GET on ``pipe``; read its reply with :func:`state_from_reply`."""
    # Raw bytes: a value that is not UTF-8 must become HALTED, not a decoding crash.
    queue_raw(pipe, "GET", keys.trading_state)


async def read_trading_state(r: AsyncRedis, keys: Keys) -> TradingState:
    """The trading state, fail-closed: a wrong key type, bad bytes or an unknown value is
    HALTED (only a lost connection raises)."""
    pipe = r.pipeline(transaction=False)
    queue_state_read(pipe, keys)
    (reply,) = await pipe.execute(raise_on_error=False)
    return state_from_reply(reply)
