"""permitchain: a fail-closed execution gate for automated crypto-futures exits."""

__version__ = "0.1.0"
