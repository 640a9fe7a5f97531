"""Recorded candles: readers for Binance kline CSVs, OHLCV CSVs with a header and Freqtrade's
JSON candles, into one column layout (:class:`Series`).

Accepted layouts (detected from the content, not the file name):

* **CSV with a header** naming at least ``open_time`` (or ``date``/``timestamp``), ``open``,
  ``high``, ``low``, ``close`` (the shared files, Binance dumps with their header);
* **CSV without a header**: the columns in Binance's order, open time first (12 columns in
  Binance's kline dumps, 6 in a bare OHLCV file);
* **Freqtrade JSON**: a list of ``[open_time_ms, open, high, low, close, volume]``.

Open times are epoch milliseconds (microseconds, as in Binance's dumps since 2025, are
recognised by their size). Prices are read as ``Decimal`` from their text. A bad row stops
the read with :class:`DataError` naming the file and the line (the candle number for JSON):
a missing or non-numeric field, a non-positive price, low above high, a time not after the
previous candle's. **Gaps** (a missing candle is simply absent) are kept as they are and
reported (:attr:`Series.gaps`); the estimators restart their windows after one.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path

from permitchain.contract.errors import PermitchainError

TIME_NAMES = ("open_time", "date", "timestamp", "time")
MICROSECONDS_ABOVE = 10**14  # an epoch in ms stays below this until the year 5138


class DataError(PermitchainError):
    """A candle file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Gap:
    after_s: float  # open time of the last candle before the gap
    missing: int  # candles missing


@dataclass(slots=True)
class Series:
    """One market's candles, in time order, as columns."""

    name: str  # the file's name
    symbol: str  # derived from the name: letters and digits, upper case
    interval_s: float
    times: list[float] = field(default_factory=list)  # open times, epoch seconds
    opens: list[Decimal] = field(default_factory=list)
    highs: list[Decimal] = field(default_factory=list)
    lows: list[Decimal] = field(default_factory=list)
    closes: list[Decimal] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def missing(self) -> int:
        return sum(g.missing for g in self.gaps)


def symbol_of(name: str) -> str:
    """``ETH_BTC-5m.csv`` → ``ETHBTC``, ``BTCUSDT-1m-2024-01.csv`` (Binance's dumps) →
    ``BTCUSDT``: the part before the interval, letters and digits."""
    stem = Path(name).name.split(".")[0]
    base = re.split(r"-\d+[smhdwM](?:-|$)", stem)[0]
    sym = re.sub(r"[^A-Za-z0-9]", "", base).upper()[:32]
    return sym if len(sym) >= 2 else "REPLAY"


def _time_s(raw: str) -> float:
    try:
        t = int(Decimal(raw))
    except (InvalidOperation, ValueError):
        raise ValueError(f"open time {raw.strip()!r} is not a number") from None
    return t / 1_000_000 if t >= MICROSECONDS_ABOVE else t / 1000


def _price(raw: str) -> Decimal:
    try:
        d = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueError(f"price {raw.strip()!r} is not a number") from None
    if not d.is_finite() or d <= 0:
        raise ValueError(f"price {raw.strip()!r} is not positive")
    return d


def _fill(name: str, rows: list[tuple[int, list[str]]], cols: tuple[int, ...]) -> Series:
    """Rows (line number, fields) → a series; ``cols`` = indexes of time, o, h, l, c."""
    ti, oi, hi, li, ci = cols
    times: list[float] = []
    opens, highs, lows, closes = [], [], [], []
    for line, f in rows:
        try:
            t = _time_s(f[ti])
            o, h, lo, c = _price(f[oi]), _price(f[hi]), _price(f[li]), _price(f[ci])
        except (IndexError, ValueError, InvalidOperation, TypeError) as e:
            why = "too few fields" if isinstance(e, IndexError) else str(e) or "not a number"
            raise DataError(f"{name}: line {line}: {why}") from None
        if lo > h:
            raise DataError(f"{name}: line {line}: low {lo} above high {h}")
        if times and t <= times[-1]:
            raise DataError(f"{name}: line {line}: open time {f[ti]} not after the previous")
        times.append(t)
        opens.append(o)
        highs.append(h)
        lows.append(lo)
        closes.append(c)
    if len(times) < 2:
        raise DataError(f"{name}: fewer than two candles")
    steps = Counter(round(b - a, 6) for a, b in pairwise(times))
    interval = steps.most_common(1)[0][0]
    gaps = []
    for a, b in pairwise(times):
        n = round((b - a) / interval) - 1
        if b - a > interval * 1.5 and n > 0:
            gaps.append(Gap(a, n))
    return Series(name, symbol_of(name), interval, times, opens, highs, lows, closes, gaps)


def read_csv(path: Path) -> Series:
    name = path.name
    with path.open(newline="") as fh:
        rows = [(i, r) for i, r in enumerate(csv.reader(fh), 1) if r and any(x.strip() for x in r)]
    if not rows:
        raise DataError(f"{name}: no candles")
    first = [x.strip().lower() for x in rows[0][1]]
    try:
        Decimal(first[0])
        header = False
    except InvalidOperation:
        header = True
    if not header:
        return _fill(name, rows, (0, 1, 2, 3, 4))
    try:
        ti = next(first.index(n) for n in TIME_NAMES if n in first)
        cols = (ti, *(first.index(n) for n in ("open", "high", "low", "close")))
    except (StopIteration, ValueError):
        raise DataError(
            f"{name}: line 1: header needs open_time, open, high, low, close; got {','.join(first)}"
        ) from None
    return _fill(name, rows[1:], cols)


def read_json(path: Path) -> Series:
    name = path.name
    try:
        raw = json.loads(path.read_text(), parse_float=str, parse_int=str)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}: line {e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(raw, list):
        raise DataError(f"{name}: expected a list of candles")
    rows = []
    for i, c in enumerate(raw, 1):
        if not isinstance(c, list):
            raise DataError(f"{name}: candle {i}: not a list")
        rows.append((i, [str(x) for x in c]))
    try:
        return _fill(name, rows, (0, 1, 2, 3, 4))
    except DataError as e:
        raise DataError(str(e).replace(": line ", ": candle ", 1)) from None


def read_series(path: str | Path) -> Series:
    """Read one candle file (layout detected from its content)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(64).lstrip()
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    return read_json(p) if head.startswith(b"[") else read_csv(p)
