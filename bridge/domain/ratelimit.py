"""Token buckets for per-agent write quotas and rate-limited audit of refusals."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """Independent token buckets per key: `rate` tokens per minute, `burst` capacity (rate 0 = unlimited)."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000):
        self.per_second = per_minute / 60.0
        self.burst = max(burst, 1)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        if self.per_second <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
            if tokens >= 1:
                if len(self._buckets) >= self.max_keys and key not in self._buckets:
                    self._buckets.clear()  # bounded memory; a reset only ever grants more
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.per_second

    @staticmethod
    def retry_after_header(wait: float) -> int:
        """A `Retry-After` value in whole seconds (at least 1)."""
        return max(1, math.ceil(wait))
