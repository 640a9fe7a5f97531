"""Entries: when the replay opens a position, from a rule or from a CSV file.

**Rule** ``every:<period>:<side>``: a position at the open of every candle whose open time is
a multiple of the period (UTC; ``30m``, ``6h``, ``1d`` …), side ``long``, ``short`` or
``alternate`` (long, short, long, … over the entries actually taken). Quantity
``REPLAY_QTY``, price the candle's open with the slippage against the trader. While a
position is open the next due entry is skipped (one position per symbol, as P3.3 has it)
and counted.

**CSV** with a header ``time,symbol,side,qty,entry_price``: ``time`` in ISO 8601 (UTC when
no offset is given) or epoch milliseconds; ``symbol`` as derived from the data file's name
(``ETH_BTC-5m.csv`` → ``ETHBTC``; empty: every file); ``side`` ``long``/``short``. The
position opens at the first candle whose open time is at or after ``time``, at the given
price. A bad row stops with the file and line named.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from permitchain.replay.data import DataError

RULE_RE = re.compile(r"^every:(\d+)([mhd]):(long|short|alternate)$")
UNIT_S = {"m": 60, "h": 3600, "d": 86400}
CSV_FIELDS = ("time", "symbol", "side", "qty", "entry_price")


@dataclass(frozen=True, slots=True)
class Rule:
    period_s: int
    side: str  # long | short | alternate

    def __str__(self) -> str:
        return f"every:{self.period_s}s:{self.side}"


@dataclass(frozen=True, slots=True)
class Entry:
    time_s: float
    symbol: str  # "" = any
    is_long: bool
    qty: Decimal
    price: Decimal


def parse_rule(text: str) -> Rule | None:
    m = RULE_RE.match(text.strip())
    if m is None:
        return None
    n, unit, side = int(m[1]), m[2], m[3]
    if n <= 0:
        return None
    return Rule(n * UNIT_S[unit], side)


def _time(raw: str) -> float:
    raw = raw.strip()
    if raw.isdigit():
        return int(raw) / 1000
    t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def read_entries(path: str | Path) -> list[Entry]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [x.strip().lower() for x in rows[0]][:5] != list(CSV_FIELDS):
        raise DataError(f"{p.name}: line 1: header must be {','.join(CSV_FIELDS)}")
    out = []
    for line, r in enumerate(rows[1:], 2):
        if not r or not any(x.strip() for x in r):
            continue
        try:
            t, sym, side, qty, price = (x.strip() for x in r[:5])
            if side.lower() not in ("long", "short"):
                raise ValueError(f"side {side!r} (long or short)")
            q, pr = Decimal(qty), Decimal(price)
            if not (q.is_finite() and q > 0 and pr.is_finite() and pr > 0):
                raise ValueError("qty and entry_price must be positive")
            out.append(Entry(_time(t), sym.upper(), side.lower() == "long", q, pr))
        except (ValueError, InvalidOperation) as e:
            why = str(e) if str(e) and "unpack" not in str(e) else "expected 5 fields"
            raise DataError(f"{p.name}: line {line}: {why}") from None
    return sorted(out, key=lambda e: e.time_s)


def for_symbol(entries: Sequence[Entry], symbol: str) -> list[Entry]:
    return [e for e in entries if e.symbol in ("", symbol)]
