"""Token buckets for per-agent write quotas, and the per-actor limit on audit rows of refusals."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


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


def refusal_key(agent_id: str | None, address: str | None) -> str:
    """Whom a refusal is charged to: the verified agent when there is one, else the client address (a loopback
    address included: it is trusted no more than any other)."""
    return f"agent:{agent_id}" if agent_id is not None else f"address:{address or 'unknown'}"


@dataclass(frozen=True)
class Admission:
    """Whether to write this refusal's audit row, and how many refusals of the same actor went unaudited since
    its previous audited one (to be reported with it)."""

    audit: bool
    suppressed_before: int = 0


class RefusalAuditLimiter:
    """Audit rows of refusals per actor key: a burst, then a steady rate, so a flood cannot grow the audit table
    without bound and one actor's flood never silences another's. What it holds back is counted per key."""

    def __init__(self, per_minute: int, burst: int,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self._buckets = TokenBuckets(per_minute, burst, clock, max_keys)
        self._suppressed: dict[str, int] = {}
        self._max_keys = max_keys
        self._lock = threading.Lock()

    def admit(self, key: str) -> Admission:
        """Take the actor's next audit slot, or count the refusal as suppressed."""
        with self._lock:
            if self._buckets.take(key) > 0:
                if len(self._suppressed) >= self._max_keys and key not in self._suppressed:
                    self._suppressed.clear()  # bounded memory: the suppression metric still counted every one
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return Admission(audit=False)
            return Admission(audit=True, suppressed_before=self._suppressed.pop(key, 0))
