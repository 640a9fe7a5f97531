"""``permitchain replay`` as a user runs it: the shared files, byte-identical --json, one-line
errors with exit 2, --sweep rows, --plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from permitchain.cli.main import app

FILES = ("ADA_BTC-5m.csv", "ETH_BTC-5m.csv", "UNITTEST_BTC-1m.csv", "XRP_ETH-1m.csv")


def invoke(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr (the console wraps long lines: joined again here)."""
    res = CliRunner().invoke(app, ["replay", *args])
    return res.exit_code, res.stdout, " ".join(res.stderr.split())


@pytest.mark.parametrize("name", FILES)
def test_summary_of_each_shared_file(klines: Path, name: str) -> None:
    code, out, _err = invoke(str(klines / name), "--summary")
    assert code == 0, out
    assert "replay summary" in out and name in out and "net R" in out


def test_json_is_byte_identical_and_complete(klines: Path) -> None:
    args = (str(klines / "XRP_ETH-1m.csv"), str(klines / "ETH_BTC-5m.csv"), "--json")
    first, second = invoke(*args), invoke(*args)
    assert first[0] == 0 and first[1] == second[1]
    data = json.loads(first[1])
    assert data["inputs"]["settings"]["EXIT_BAR_S"] == "300.0"
    f = data["files"][1]
    assert f["file"] == "ETH_BTC-5m.csv" and f["candles"] == 5760
    t = f["totals"]
    for k in (
        "net_r",
        "hold_r",
        "baseline_r",
        "exits_per_trade",
        "mean_hours_in_trade",
        "max_drawdown_r",
        "kill_score",
    ):
        assert t[k] is not None
    exits = [e for tr in f["trades"] for e in tr["exits"] if e["components"]]
    assert exits and set(exits[0]["components"]) == {
        "regime_flip",
        "sigma_spike",
        "ts_drop",
        "age_penalty",
    }
    assert all(k in exits[0] for k in ("action", "kill_score", "r", "pnl", "qty"))


def test_a_bad_row_is_one_line_and_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "BAD-1m.csv"
    f.write_text("open_time,open,high,low,close,volume\n1,1,1,1,1,1\n60001,1,x,1,1,1\n")
    code, _out, err = invoke(str(f))
    assert code == 2
    assert err == "error: BAD-1m.csv: line 3: price 'x' is not a number"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "NOPE=1"), "--set NOPE: unknown setting"),
        (("--set", "FULL_CLOSE_SCORE=2"), "FULL_CLOSE_SCORE"),
        (("--entries", "every:6x:long"), "--entries 'every:6x:long'"),
        (("--set", "EXIT_BAR_S=60"), "EXIT_BAR_S=60 is shorter than the 300s candles"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    klines: Path, args: tuple[str, ...], message: str
) -> None:
    code, _out, err = invoke(str(klines / "ETH_BTC-5m.csv"), *args)
    assert code == 2 and message in err and err.count("error:") == 1, err


def test_sweep_gives_one_row_per_grid_point(klines: Path) -> None:
    code, out, _err = invoke(
        str(klines / "XRP_ETH-1m.csv"),
        "--sweep",
        "FULL_CLOSE_SCORE=0.6,0.75,0.9",
        "--sweep",
        "EXIT_TRANCHE_R=1,2,3;2,4,6",
        "--json",
        "--workers",
        "2",
    )
    assert code == 0, out
    rows = json.loads(out)["sweep"]
    assert [(r["point"]["FULL_CLOSE_SCORE"], r["point"]["EXIT_TRANCHE_R"]) for r in rows] == [
        (s, t) for s in ("0.6", "0.75", "0.9") for t in ("1,2,3", "2,4,6")
    ]
    # each point is the replay with that value: the same as a single run
    code, single, _ = invoke(
        str(klines / "XRP_ETH-1m.csv"),
        "--set",
        "FULL_CLOSE_SCORE=0.9",
        "--set",
        "EXIT_TRANCHE_R=2,4,6",
        "--json",
    )
    assert rows[-1]["totals"] == json.loads(single)["totals"]


def test_plot_writes_a_png(klines: Path, tmp_path: Path) -> None:
    png = tmp_path / "replay.png"
    code, out, _err = invoke(str(klines / "XRP_ETH-1m.csv"), "--summary", "--plot", str(png))
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
