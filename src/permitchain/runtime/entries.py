"""Stream entries read as raw bytes, decoded one entry at a time.

A stream reply is read undecoded (``store/raw.py``, on the pooled, lean and
Cluster transports alike), so one entry whose bytes are not UTF-8 can never fail the read of
a whole batch, or of every batch after it: the service runner decodes each entry in the step
that classifies and dead-letters (:func:`decode_fields`; a failure is one dead letter, reason
``not_utf8``, its fields shown escaped by :func:`escaped`), and the readers for people
(``plans``, ``explain``, ``status``, the canary, the bench) show such an entry escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from permitchain.contract.reasons import NOT_UTF8
from permitchain.store.protocol import AsyncRedis
from permitchain.store.raw import execute_raw

RawFields: TypeAlias = Mapping[bytes | str, bytes | str]
#: (entry id, fields) as read raw; fields None for an entry deleted while pending.
RawEntry: TypeAlias = tuple[bytes | str, RawFields | None]
Entry: TypeAlias = tuple[str, dict[str, str]]


class NotUtf8(ValueError):
    """A stream entry's field name or value is not UTF-8."""


def _text(b: bytes | str) -> str:
    return b if isinstance(b, str) else b.decode("utf-8")


def text_id(raw: bytes | str) -> str:
    """A stream entry id (``<ms>-<seq>``: ASCII digits, always decodable)."""
    return raw if isinstance(raw, str) else raw.decode("ascii", "backslashreplace")


def decode_fields(raw: RawFields) -> dict[str, str]:
    """An entry's fields as text; :class:`NotUtf8` names the first field that is not UTF-8."""
    try:  # the usual case: bytes, read raw
        return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
    except AttributeError:  # already text (a client that decodes)
        return {_text(k): _text(v) for k, v in raw.items()}
    except UnicodeDecodeError:
        pass
    for k, v in raw.items():
        for what, b in (("name", k), ("value", v)):
            try:
                _text(b)
            except UnicodeDecodeError as e:
                name = show(k)
                raise NotUtf8(
                    f"{NOT_UTF8}: field {name!r}: {what} is not UTF-8 "
                    f"(byte 0x{e.object[e.start]:02x} at {e.start})"
                ) from None
    raise AssertionError("unreachable: a field failed to decode once")  # pragma: no cover


def show(b: bytes | str) -> str:
    """Text for people and logs: bytes that are not UTF-8 as backslash escapes (``\\xff``)."""
    return b if isinstance(b, str) else b.decode("utf-8", "backslashreplace")


def escaped(raw: RawFields) -> dict[str, str]:
    """An entry's fields with every byte that is not UTF-8 shown as a backslash escape."""
    return {show(k): show(v) for k, v in raw.items()}


def shown(entries: Sequence[RawEntry] | None) -> list[Entry]:
    """Raw entries for reading (ops commands, the bench): each decoded, bad bytes escaped;
    an entry deleted while pending (fields None) shows no fields."""
    return [(text_id(i), escaped(f) if f is not None else {}) for i, f in entries or ()]


async def xreadgroup_raw(
    r: AsyncRedis,
    group: str,
    consumer: str,
    stream: str,
    ident: str,
    *,
    count: int,
    block_ms: int | None,
) -> list[RawEntry]:
    """XREADGROUP of one stream, undecoded: the entries (``[]`` when none)."""
    args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    resp = await execute_raw(r, *args, "STREAMS", stream, ident)
    if not resp:
        return []
    entries: list[RawEntry] = resp[0][1]
    return entries


async def xautoclaim_raw(
    r: AsyncRedis, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
) -> list[RawEntry]:
    """XAUTOCLAIM from the start of the pending list, undecoded: the entries claimed."""
    resp = await execute_raw(
        r, "XAUTOCLAIM", stream, group, consumer, min_idle_ms, "0-0", "COUNT", count
    )
    entries: list[RawEntry] = resp[1]
    return entries


async def xread_raw(
    r: AsyncRedis, positions: Mapping[str, str], *, count: int, block_ms: int | None
) -> list[tuple[str, list[RawEntry]]]:
    """XREAD of ``positions`` (stream → last id), undecoded: ``[(stream, entries)]``."""
    args: list[Any] = ["XREAD", "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    args += ["STREAMS", *positions, *positions.values()]
    resp = await execute_raw(r, *args)
    return [(show(s), es) for s, es in resp or []]


async def xrange_raw(
    r: AsyncRedis,
    stream: str,
    lo: str = "-",
    hi: str = "+",
    count: int | None = None,
    *,
    reverse: bool = False,
) -> list[RawEntry]:
    """XRANGE (or, ``reverse``, XREVRANGE from ``hi`` down to ``lo``), undecoded."""
    args: list[Any] = ["XREVRANGE", stream, hi, lo] if reverse else ["XRANGE", stream, lo, hi]
    if count is not None:
        args += ["COUNT", count]
    entries: list[RawEntry] = await execute_raw(r, *args)
    return entries
