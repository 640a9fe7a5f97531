"""Entries: rules and CSV files; a bad row named by file and line."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from permitchain.contract.errors import ConfigError
from permitchain.replay import runner
from permitchain.replay.data import DataError
from permitchain.replay.entries import Rule, for_symbol, parse_rule, read_entries


def test_rules() -> None:
    assert parse_rule("every:6h:long") == Rule(21600, "long")
    assert parse_rule("every:30m:alternate") == Rule(1800, "alternate")
    assert parse_rule("every:1d:short") == Rule(86400, "short")
    for bad in ("every:6x:long", "every:0h:long", "every:6h:both", "6h"):
        assert parse_rule(bad) is None
    with pytest.raises(ConfigError, match=r"every:<n><m\|h\|d>"):
        runner.parse_entries("every:6h:sideways")


def test_csv_entries(tmp_path: Path) -> None:
    f = tmp_path / "entries.csv"
    f.write_text(
        "time,symbol,side,qty,entry_price\n"
        "2018-01-10T06:00:00,ethbtc,long,2,0.0991\n"
        "1515560100000,,short,1,0.0984\n\n"
        "2018-01-10T05:00:00+01:00,ADABTC,long,1,0.00005\n"
    )
    entries = read_entries(f)
    assert [(e.time_s, e.symbol, e.is_long, e.qty, e.price) for e in entries] == [
        (1515556800.0, "ADABTC", True, Decimal(1), Decimal("0.00005")),  # 04:00Z
        (1515560100.0, "", False, Decimal(1), Decimal("0.0984")),
        (1515564000.0, "ETHBTC", True, Decimal(2), Decimal("0.0991")),
    ]
    assert [e.symbol for e in for_symbol(entries, "ETHBTC")] == ["", "ETHBTC"]


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("2018-01-10T06:00:00,ETHBTC,flat,1,0.1", "line 3: side 'flat'"),
        ("2018-01-10T06:00:00,ETHBTC,long,-1,0.1", "line 3: qty and entry_price must be positive"),
        ("yesterday,ETHBTC,long,1,0.1", "line 3: "),
        ("2018-01-10T06:00:00,ETHBTC", "line 3: expected 5 fields"),
    ],
)
def test_a_bad_entry_names_file_and_line(tmp_path: Path, row: str, why: str) -> None:
    f = tmp_path / "mine.csv"
    f.write_text(f"time,symbol,side,qty,entry_price\n2018-01-10T05:00:00,,long,1,0.1\n{row}\n")
    with pytest.raises(DataError, match=rf"^mine\.csv: {re.escape(why)}"):
        read_entries(f)
    f.write_text("when,what\n")
    with pytest.raises(DataError, match=r"mine\.csv: line 1: header must be"):
        read_entries(f)
