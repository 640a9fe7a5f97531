"""``--plot FILE``: per data file, the price with the exits marked, and the equity curve in R
(matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from permitchain.replay.engine import END, STOP, SeriesResult

MARKERS = {
    "PARTIAL_25": ("v", "tab:green"),
    "PARTIAL_50": ("v", "tab:olive"),
    "PARTIAL_75": ("v", "tab:cyan"),
    "FULL_CLOSE_PROPOSED": ("X", "tab:red"),
    "UPDATE_SL": ("_", "tab:purple"),
    STOP: ("x", "black"),
    END: ("s", "grey"),
}


def plot(results: Sequence[SeriesResult], path: str | Path) -> None:
    """Write a PNG (or any format matplotlib knows from the suffix). ImportError without
    matplotlib."""
    import matplotlib  # noqa: PLC0415 - the optional extra, only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2 * len(results), 1, figsize=(12, 5 * len(results)), squeeze=False)
    for k, r in enumerate(results):
        s = r.series
        when = [datetime.fromtimestamp(t, UTC) for t in s.times]
        price, equity = axes[2 * k][0], axes[2 * k + 1][0]
        price.plot(when, [float(c) for c in s.closes], lw=0.6, color="tab:blue")
        price.set_title(f"{s.name}: close, entries and exits")
        for t in r.trades:
            colour = "navy" if t.is_long else "darkorange"
            price.scatter(
                [datetime.fromtimestamp(t.entry_s, UTC)],
                [float(t.entry_price)],
                marker="^" if t.is_long else "v",
                color=colour,
                s=30,
                zorder=3,
                label="entry long" if t.is_long else "entry short",
            )
            for e in t.exits:
                if not e.executed or (e.price is None and e.new_sl is None):
                    continue
                marker, c = MARKERS.get(e.action, ("o", "grey"))
                y = e.price if e.price is not None else e.new_sl
                price.scatter(
                    [datetime.fromtimestamp(e.time_s, UTC)],
                    [float(y or 0)],
                    marker=marker,
                    color=c,
                    s=40,
                    zorder=4,
                    label=e.action,
                )
        handles, labels = price.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        price.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        equity.plot(when[: len(r.equity)], r.equity, lw=0.8, color="tab:orange")
        equity.axhline(0, color="grey", lw=0.5)
        equity.set_title(f"{s.name}: equity in R (all trades, at each close)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
