"""Long-poll slots: how many requests may wait at once, per agent and in total (waits never starve).

A waiting `read_messages`/`inbox` holds one of the server's request threads for up to 30 s. Capping concurrent
waits well below the thread count keeps threads free for short requests. A wait past a cap is not queued: the
call answers at once (as with `wait_ms=0`) with a hint telling the client when to ask again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bridge.domain.vocabulary import Reason

MIN_RETRY_MS = 100  # never tell a client to retry sooner (docs/api.md: N ≥ 100): a refused client must not spin


@dataclass(frozen=True)
class Refusal:
    """Why a wait was not granted, and about when a slot frees up (the soonest deadline of the waits in the way)."""

    reason: str
    retry_after_ms: int

    def hint(self) -> dict[str, Any]:
        """The `wait` field of the response."""
        return {"honoured": False, "reason": self.reason, "retry_after_ms": self.retry_after_ms}


class WaitSlots:
    """Thread-safe counts of the waits in progress in this process, by agent."""

    def __init__(self, per_agent: int, total: int):
        self.per_agent, self.total = per_agent, total
        self._lock = threading.Lock()
        self._deadlines: dict[str, list[float]] = {}  # agent id -> monotonic deadlines of its waits
        self._held = 0

    @property
    def held(self) -> int:
        """Waits in progress now."""
        return self._held

    @contextmanager
    def slot(self, agent_id: str, deadline: float) -> Iterator[Refusal | None]:
        """Hold a slot until `deadline` (monotonic) or the block ends; yields None, or the Refusal (nothing held)."""
        refusal = self._acquire(agent_id, deadline)
        try:
            yield refusal
        finally:
            if refusal is None:
                self._release(agent_id, deadline)

    def _acquire(self, agent_id: str, deadline: float) -> Refusal | None:
        with self._lock:
            mine = self._deadlines.get(agent_id, [])
            if len(mine) >= self.per_agent:
                return Refusal(Reason.AGENT_LONG_POLL_LIMIT, _retry_ms(mine))
            if self._held >= self.total:
                everyone = [d for ds in self._deadlines.values() for d in ds]
                return Refusal(Reason.SERVER_LONG_POLL_LIMIT, _retry_ms(everyone))
            self._deadlines.setdefault(agent_id, []).append(deadline)
            self._held += 1
            return None

    def _release(self, agent_id: str, deadline: float) -> None:
        with self._lock:
            mine = self._deadlines[agent_id]
            mine.remove(deadline)
            if not mine:
                del self._deadlines[agent_id]
            self._held -= 1


def _retry_ms(deadlines: list[float]) -> int:
    soonest = min(deadlines, default=time.monotonic())
    return max(MIN_RETRY_MS, int((soonest - time.monotonic()) * 1000))
