"""Retry delays: exponential backoff with full jitter (every retry loop of the services)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter, reset on success."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.base_s, self.cap_s, self.n = base_s, cap_s, 0

    def next_delay(self) -> float:
        self.n += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2**self.n))

    def reset(self) -> None:
        self.n = 0
