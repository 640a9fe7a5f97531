"""Candle readers: the shared OHLCV CSVs, Binance kline CSVs with and without a header,
Freqtrade JSON; gaps reported; a bad row named by file and line."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from permitchain.replay.data import DataError, read_series, symbol_of

BINANCE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def first_rows(klines: Path, name: str, n: int) -> list[list[str]]:
    lines = (klines / name).read_text().splitlines()[1 : n + 1]
    return [line.split(",") for line in lines]


def binance_line(r: list[str], micro: bool = False) -> str:
    t = int(r[0]) * (1000 if micro else 1)
    return ",".join([str(t), *r[1:6], str(t + 59_999), "1", "2", "3", "4", "0"])


def test_shared_files_read_as_recorded(klines: Path) -> None:
    s = read_series(klines / "ETH_BTC-5m.csv")
    assert (s.symbol, len(s), s.interval_s, s.gaps) == ("ETHBTC", 5760, 300.0, [])
    assert s.times[0] == 1515560100.0 and s.opens[0] == Decimal("0.0984")
    assert s.closes[1] == Decimal("0.09969000000000001")  # the text, not a float's rounding
    u = read_series(klines / "UNITTEST_BTC-1m.csv")
    assert u.interval_s == 60.0 and len(u) == 13681
    assert len(u.gaps) == 538 and u.missing == 717  # absent candles, reported


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("micro", [False, True])
def test_binance_kline_csv(klines: Path, tmp_path: Path, header: bool, micro: bool) -> None:
    rows = first_rows(klines, "ETH_BTC-5m.csv", 50)
    f = tmp_path / "ETHBTC-5m-2018-01.csv"
    lines = [BINANCE_HEADER] if header else []
    f.write_text("\n".join(lines + [binance_line(r, micro) for r in rows]) + "\n")
    s = read_series(f)
    ref = read_series(klines / "ETH_BTC-5m.csv")
    assert s.symbol == "ETHBTC" and len(s) == 50 and s.interval_s == 300.0
    assert s.times == ref.times[:50] and s.closes == ref.closes[:50] and s.lows == ref.lows[:50]


def test_freqtrade_json(klines: Path, tmp_path: Path) -> None:
    rows = first_rows(klines, "XRP_ETH-1m.csv", 40)
    f = tmp_path / "XRP_ETH-1m.json"
    f.write_text(json.dumps([[int(r[0]), *(float(x) for x in r[1:6])] for r in rows]))
    s = read_series(f)
    ref = read_series(klines / "XRP_ETH-1m.csv")
    assert s.symbol == "XRPETH" and s.times == ref.times[:40]
    assert [float(c) for c in s.closes] == [float(c) for c in ref.closes[:40]]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("1515560700000,0.1,abc,0.09,0.1,5", "line 4: "),
        ("1515560700000,0.1,0.2,0.09", "line 4: too few fields"),
        ("1515560700000,0.1,0.2,-0.09,0.1,5", "line 4: price '-0.09' is not positive"),
        ("1515560700000,0.1,0.09,0.2,0.1,5", "line 4: low 0.2 above high 0.09"),
        ("1515560100000,0.1,0.2,0.09,0.1,5", "line 4: open time 1515560100000 not after"),
    ],
)
def test_a_bad_row_names_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    f = tmp_path / "BAD-5m.csv"
    f.write_text(
        "open_time,open,high,low,close,volume\n"
        "1515560100000,0.1,0.2,0.09,0.1,5\n1515560400000,0.1,0.2,0.09,0.1,5\n"
        f"{line}\n"
    )
    with pytest.raises(DataError, match="^BAD-5m.csv: " + why.replace("(", r"\(")):
        read_series(f)


def test_gaps_are_kept_and_reported(tmp_path: Path) -> None:
    f = tmp_path / "GAP-1m.csv"
    times = [0, 1, 2, 5, 6, 7, 8, 20]
    f.write_text("".join(f"{1_600_000_020_000 + 60_000 * t},1,1,1,1,1\n" for t in times))
    s = read_series(f)
    assert s.interval_s == 60.0 and len(s) == 8
    assert [(g.missing) for g in s.gaps] == [2, 11] and s.missing == 13


def test_symbol_from_name() -> None:
    assert symbol_of("UNITTEST_BTC-1m.csv") == "UNITTESTBTC"
    assert symbol_of("/x/BTCUSDT-1m-2024-01.csv") == "BTCUSDT"
    assert symbol_of("candles.json") == "CANDLES"
