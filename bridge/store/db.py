"""The SQLite store: connection factory, group-committing writer, thread-local readers, commit wake-ups.

Everything SQLite-specific lives in this package: pragmas, `BEGIN IMMEDIATE`, the long-poll wake-up (in-process
notification plus a `PRAGMA data_version` watcher that sees commits made by other processes).

Writes go through `Store.write(fn)`: `fn(conn)` runs on the single writer connection inside a `BEGIN IMMEDIATE`
transaction, in its own SAVEPOINT. Concurrent callers are batched into one commit (group commit) by the writer
thread, so eight writers cost one fsync instead of eight; a failing `fn` rolls back only its own savepoint. When
nothing is committing or queued, the caller commits on its own thread instead (one at a time), which saves two
thread hand-offs per uncontended write. `write()` returns only after COMMIT, so an acknowledged write is durable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import apsw

from bridge.errors import Unavailable
from bridge.store.migrate import migrate

T = TypeVar("T")
log = logging.getLogger("bridge.store")
MAX_BATCH = 128
_DATA_VERSION_POLL = 0.005  # seconds between cross-process commit checks while someone long-polls



def connect(path: Path | str, *, synchronous: str = "FULL", busy_timeout: float = 5.0) -> apsw.Connection:
    """Open a connection with the bridge's pragmas: WAL, chosen synchronous, foreign keys, busy timeout."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(int(busy_timeout * 1000))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def unavailable_from(exc: apsw.Error) -> Unavailable:
    """Map an apsw failure (busy, locked, full, I/O) to the UNAVAILABLE error with a reason."""
    reason = {
        apsw.BusyError: "database_busy", apsw.LockedError: "database_busy", apsw.FullError: "disk_full",
        apsw.ReadOnlyError: "read_only",
    }.get(type(exc), "storage_error")
    return Unavailable("the database is unavailable; nothing was written", {"reason": reason}, retry_after=1)


_STORAGE_ERRORS = (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError, apsw.ReadOnlyError,
                   apsw.CantOpenError)


class Store:
    """One SQLite database file shared by every thread (and process) of the bridge."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL", busy_timeout: float = 5.0,
                 migrate_schema: bool = True):
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all_readers: list[apsw.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: deque[tuple[Callable[[apsw.Connection], Any], Future[Any]]] = deque()
        self._queue_cv = threading.Condition()
        self._commit_cv = threading.Condition()
        self._commits = 0
        self._waiters = 0
        self._closed = False
        self._writing = False  # a batch is committing (on the writer thread or inline on a caller's thread)
        self.commit_listeners: list[Callable[[], None]] = []
        writer_conn = connect(self.path, synchronous=synchronous, busy_timeout=busy_timeout)
        if migrate_schema:
            migrate(writer_conn)
        self._writer_conn = writer_conn
        self._writer = threading.Thread(target=self._write_loop, name="bridge-store-writer", daemon=True)
        self._writer.start()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- reading
    def reader(self) -> apsw.Connection:
        """This thread's read connection (one per thread: apsw connections are not shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)
            self._local.conn = conn
            with self._readers_lock:
                self._all_readers.append(conn)
        return conn

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` inside one read transaction (a consistent snapshot)."""
        conn = self.reader()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except _STORAGE_ERRORS as exc:
            raise unavailable_from(exc) from exc

    def query(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run a single-statement read `fn(conn)` in autocommit (one statement is its own snapshot; no BEGIN/COMMIT)."""
        try:
            return fn(self.reader())
        except _STORAGE_ERRORS as exc:
            raise unavailable_from(exc) from exc

    # ------------------------------------------------------------------------------------------- writing
    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` in a `BEGIN IMMEDIATE` transaction (batched with concurrent writers); return after COMMIT."""
        future: Future[T] = Future()
        with self._queue_cv:
            if self._closed:
                raise Unavailable("the store is closed", {"reason": "shutting_down"})
            inline = not self._queue and not self._writing
            if inline:  # nobody is writing or waiting: commit on this thread, sparing two thread hand-offs
                self._writing = True
            else:
                self._queue.append((fn, future))
                if not self._writing:  # else whoever is committing hands the queue on when done
                    self._queue_cv.notify()
        if inline:
            try:
                self._run_batch(self._writer_conn, [(fn, future)])
            finally:
                self._done_writing()
        return future.result()

    def _done_writing(self) -> None:
        with self._queue_cv:
            self._writing = False
            if self._queue or self._closed:  # wake the writer thread (queued work) or close() (waiting for quiet)
                self._queue_cv.notify_all()

    def _write_loop(self) -> None:
        conn = self._writer_conn
        while True:
            with self._queue_cv:
                while (not self._queue or self._writing) and not self._closed:
                    self._queue_cv.wait()
                if not self._queue and self._closed:
                    return
                if self._writing:  # closing while an inline write commits: let it finish first
                    self._queue_cv.wait(0.01)
                    continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                self._writing = True
            try:
                self._run_batch(conn, batch)
            finally:
                self._done_writing()

    def _run_batch(self, conn: apsw.Connection,
                   batch: list[tuple[Callable[[apsw.Connection], Any], Future[Any]]]) -> None:
        try:
            self._commit_batch(conn, batch)
        except BaseException as exc:  # the writer thread must survive anything; callers get an answer
            log.exception("write batch failed", extra={"event": "store_batch_failed"})
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            error = unavailable_from(exc) if isinstance(exc, apsw.Error) else Unavailable(
                "the write could not be completed; nothing was written", {"reason": "storage_error"})
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)

    def _commit_batch(self, conn: apsw.Connection,
                      batch: list[tuple[Callable[[apsw.Connection], Any], Future[Any]]]) -> None:
        """One transaction for the batch, one SAVEPOINT per operation; answer every caller after COMMIT."""
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            for _, future in batch:
                future.set_exception(unavailable_from(exc))
            return
        for fn, future in batch:
            try:
                conn.execute("SAVEPOINT op")
                result = fn(conn)
                conn.execute("RELEASE op")
                outcomes.append((future, True, result))
            except BaseException as exc:
                if not conn.in_transaction:
                    # SQLITE_FULL / I/O errors roll the whole transaction back: nothing of the batch survives.
                    raise
                with contextlib.suppress(apsw.Error):
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                error = unavailable_from(exc) if isinstance(exc, _STORAGE_ERRORS) else exc
                outcomes.append((future, False, error))
        try:
            conn.execute("COMMIT")
        except apsw.Error as exc:
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            for future, _, _ in outcomes:
                future.set_exception(unavailable_from(exc))
            return
        self._notify_commit()
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    # ------------------------------------------------------------------------------------------- waiting
    def _notify_commit(self) -> None:
        with self._commit_cv:
            self._commits += 1
            self._commit_cv.notify_all()
        for listener in self.commit_listeners:
            listener()

    def wait_until(self, check: Callable[[], T | None], deadline: float) -> T | None:
        """Re-run `check()` after every commit (this process or another) until it returns a value or time is up."""
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
                    if remaining <= 0 or self._closed:
                        return None
                    self._commit_cv.wait_for(lambda seen=seen: self._commits != seen or self._closed,
                                             timeout=remaining)
                    seen = self._commits
        finally:
            with self._commit_cv:
                self._waiters -= 1

    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch_data_version, name="bridge-store-watcher",
                                             daemon=True)
            self._watcher.start()

    def _watch_data_version(self) -> None:
        """Notice commits by other processes: `PRAGMA data_version` changes when another connection commits."""
        conn = connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)
        try:
            last = conn.execute("PRAGMA data_version").fetchall()[0][0]
            with self._commit_cv:  # a foreign commit after a waiter's check() but before `last` was read: re-check
                self._commits += 1
                self._commit_cv.notify_all()
            idle_since = time.monotonic()
            while not self._closed:
                time.sleep(_DATA_VERSION_POLL)
                with self._commit_cv:
                    waiters = self._waiters
                    if waiters == 0 and time.monotonic() - idle_since > 5:
                        self._watcher = None  # decided under the lock: a new waiter starts a fresh watcher
                        return
                if waiters == 0:
                    continue
                idle_since = time.monotonic()
                try:
                    version = conn.execute("PRAGMA data_version").fetchall()[0][0]
                except apsw.Error:
                    continue
                if version != last:
                    last = version
                    with self._commit_cv:
                        self._commits += 1
                        self._commit_cv.notify_all()
        finally:
            conn.close()

    # ------------------------------------------------------------------------------------------- lifecycle
    def schema_version(self) -> int:
        """The database's `PRAGMA user_version`."""
        return self.read(lambda c: c.execute("PRAGMA user_version").fetchall()[0][0])

    def pragmas(self) -> dict[str, Any]:
        """The effective pragmas of a connection from the factory (for tests and `doctor`)."""
        conn = self.reader()
        return {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}

    def close(self) -> None:
        """Finish queued writes, stop the writer and close every connection."""
        with self._queue_cv:
            self._closed = True
            self._queue_cv.notify_all()
        with self._commit_cv:
            self._commit_cv.notify_all()
        self._writer.join(timeout=10)
        with self._queue_cv:
            self._queue_cv.wait_for(lambda: not self._writing, timeout=10)
        self._writer_conn.close()
        with self._readers_lock:
            for conn in self._all_readers:
                with contextlib.suppress(apsw.Error):
                    conn.close()
            self._all_readers.clear()
        self._local = threading.local()


@contextlib.contextmanager
def open_store(path: Path | str, **kwargs: Any) -> Iterator[Store]:
    """A store that is closed on exit (CLI commands, tests)."""
    store = Store(path, **kwargs)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def savepoint(conn: apsw.Connection, name: str = "work") -> Iterator[None]:
    """A nested SAVEPOINT: rolled back (and released) when the block raises."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")
