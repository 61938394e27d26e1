"""What both stores share: long-polls woken by commits (made here or anywhere else), the listeners told of every
commit, and the storage failure the latest writes hit, with the probe that notices recovery."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from bridge.domain.vocabulary import Reason
from bridge.errors import Unavailable
from bridge.store import control as control_store

T = TypeVar("T")
log = logging.getLogger("bridge.store")

# Reasons that say the storage refuses writes (not contention): they make the store degraded.
DEGRADING_REASONS = frozenset({Reason.DISK_FULL, Reason.FILE_TOO_LARGE, Reason.READ_ONLY, Reason.STORAGE_ERROR,
                               Reason.DATABASE_UNAVAILABLE})


@dataclass(frozen=True)
class StorageFailure:
    """Writes are failing for a storage reason: since when (first failure), the latest one and its reason."""

    reason: str
    since: float  # unix time of the first failure since the last successful commit
    last: float   # unix time of the latest failure


class StoreBase:
    """The engine-independent half of a store. A subclass provides `write(fn)` and `_ensure_watcher()` (what makes
    `committed_elsewhere` run when another process commits), and calls `_committed()` after each of its commits."""

    def __init__(self, probe_interval: float):
        self.probe_interval = probe_interval
        self.commit_listeners: list[Callable[[], None]] = []  # called after every COMMIT here; failures are logged
        self._commit_cv = threading.Condition()
        self._commits = 0
        self._waiters = 0
        self._closed = False
        self._waits_ended = False  # shutting down: long-polls answer with what they have
        self._failure: StorageFailure | None = None
        self._probe_lock = threading.Lock()
        self._last_probe = 0.0

    def write(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _ensure_watcher(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- health
    @property
    def storage_failure(self) -> StorageFailure | None:
        """The storage failure the latest writes hit; None once a write commits again."""
        return self._failure

    def _record_failure(self, error: Unavailable) -> Unavailable:
        """Remember a failed write's reason when it says the storage refuses writes; return the error."""
        reason = error.details["reason"]
        if reason in DEGRADING_REASONS:
            now = time.time()
            failure = self._failure
            self._failure = StorageFailure(reason, now, now) if failure is None else replace(
                failure, reason=reason, last=now)
        return error

    def check_storage(self) -> StorageFailure | None:
        """The current storage failure. While degraded, first try a tiny write (at most every `probe_interval`
        seconds, whoever asks), so the store notices by itself when writes succeed again."""
        if self._failure is None:
            return None
        with self._probe_lock:
            now = time.monotonic()
            due = now - self._last_probe >= self.probe_interval
            if due:
                self._last_probe = now
        if due:
            with contextlib.suppress(Unavailable):
                self.write(lambda conn: control_store.set_flag(conn, "storage_probe", "ok", int(time.time() * 1000)))
        return self._failure

    # ------------------------------------------------------------------------------------------- waiting
    def _committed(self) -> None:
        """After a COMMIT here: the storage works, long-polls look again, listeners hear of it."""
        self._failure = None
        self.committed_elsewhere()
        for listener in self.commit_listeners:
            try:
                listener()
            except Exception:  # a listener never turns a committed write into an error
                log.exception("commit listener failed", extra={"event": "commit_listener_failed"})

    def committed_elsewhere(self) -> None:
        """Something committed (here, or in another process or server): every waiting long-poll looks again."""
        with self._commit_cv:
            self._commits += 1
            self._commit_cv.notify_all()

    def wait_until(self, check: Callable[[], T | None], deadline: float) -> T | None:
        """Re-run `check()` after every commit (anywhere) until it returns a value or time is up."""
        with self._commit_cv:
            seen = self._commits  # read before check(): a commit racing with check() still wakes us
            self._waiters += 1
            self._ensure_watcher()
        try:
            while True:
                result = check()
                if result is not None:
                    return result
                with self._commit_cv:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed or self._waits_ended:
                        return None
                    self._commit_cv.wait_for(lambda seen=seen: self._commits != seen or self._closed
                                             or self._waits_ended,
                                             timeout=remaining)
                    seen = self._commits
        finally:
            with self._commit_cv:
                self._waiters -= 1

    def end_waits(self) -> None:
        """Make every `wait_until` in progress (and any later one) return at once: a stopping server answers its
        long-polls with what they have instead of holding them to their deadline."""
        with self._commit_cv:
            self._waits_ended = True
            self._commit_cv.notify_all()
