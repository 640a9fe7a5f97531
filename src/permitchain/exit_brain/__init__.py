"""Exit brain: market and position data → exit proposals (kill score, tranches, stop moves)."""
