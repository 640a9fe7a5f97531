"""Exchanges behind one protocol: the simulated exchange (default) and Binance USD-M."""
