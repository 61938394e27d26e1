"""Token buckets for per-agent write quotas, and the per-actor limit on audit rows of refusals."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """A token bucket's state: `tokens` left at time `at` (any clock unit, the same as the rate's)."""

    tokens: float
    at: float


def take_token(bucket: Bucket | None, now: float, per_unit: float, burst: int) -> tuple[Bucket, float]:
    """Refill `bucket` (a full one when None) at `per_unit` tokens per clock unit up to `burst`, then take one token.

    Returns the bucket after and the wait: 0 when the token was taken, else the clock units until one is available
    (the bucket after is then only refilled). `per_unit <= 0` means unlimited."""
    burst = max(burst, 1)
    if per_unit <= 0:
        return Bucket(float(burst), now), 0.0
    tokens = float(burst) if bucket is None else min(float(burst), bucket.tokens + max(0.0, now - bucket.at) * per_unit)
    if tokens >= 1:
        return Bucket(tokens - 1, now), 0.0
    return Bucket(tokens, now), (1 - tokens) / per_unit


class TokenBuckets:
    """Independent token buckets per key held in this process: `rate` tokens per minute, `burst` capacity (rate 0 =
    unlimited)."""

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000):
        self.per_second = per_minute / 60.0
        self.burst = max(burst, 1)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        if self.per_second <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._buckets.clear()  # bounded memory; a reset only ever grants more
            self._buckets[key], wait = take_token(self._buckets.get(key), now, self.per_second, self.burst)
            return wait


def retry_after_header(wait: float) -> int:
    """A `Retry-After` value in whole seconds (at least 1) for a wait in seconds."""
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

    @classmethod
    def share(cls, per_minute: int, burst: int, processes: int) -> RefusalAuditLimiter:
        """One process's share when `processes` serve one database: each gets 1/N of the rate and of the burst
        (at least one row), so all of them together never audit more than the budget per actor."""
        processes = max(1, processes)
        return cls(per_minute and max(1, per_minute // processes), max(1, burst // processes))

    def admit(self, key: str) -> Admission:
        """Take the actor's next audit slot, or count the refusal as suppressed."""
        with self._lock:
            if self._buckets.take(key) > 0:
                if len(self._suppressed) >= self._max_keys and key not in self._suppressed:
                    self._suppressed.clear()  # bounded memory: the suppression metric still counted every one
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return Admission(audit=False)
            return Admission(audit=True, suppressed_before=self._suppressed.pop(key, 0))
