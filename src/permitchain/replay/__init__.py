"""Replay: the exit brain's own kernel and the gate's pure decisions over recorded candles
(``permitchain replay``, docs/replay.md).

Modules: ``data`` (candle readers), ``entries`` (entry rules and files), ``gate`` (planner,
governor and P3.3 decisions), ``engine`` (the candle loop), ``report`` (per trade, totals,
tables, JSON), ``sweep`` (grids over processes), ``plot``, ``bench``, ``runner`` (inputs →
replay).
"""
