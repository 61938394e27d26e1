"""The SQLite store: connection factory, group-committing writer, thread-local readers, commit wake-ups.

Everything SQLite-specific lives in this package: pragmas, `BEGIN IMMEDIATE`, the long-poll wake-up (in-process
notification plus a `PRAGMA data_version` watcher that sees commits made by other processes).

Writes go through `Store.write(fn)`: `fn(conn)` runs on the single writer connection inside a `BEGIN IMMEDIATE`
transaction, in its own SAVEPOINT. Concurrent callers are batched into one commit (group commit) by the writer
thread, so eight writers cost one fsync instead of eight; a failing `fn` rolls back only its own savepoint (a batch
of one needs no savepoint: its failure rolls the transaction back, and nothing is committed). When
nothing is committing or queued, the caller commits on its own thread instead (one at a time), which saves two
thread hand-offs per uncontended write. `write()` returns only after COMMIT, so an acknowledged write is durable.

Storage health: a write refused for a disk or I/O reason (disk full, a file-size limit, an I/O error, a read-only
file) is remembered as the store's current failure until a write commits again; `check_storage()` reports it (for
`/ready`) and, while degraded, probes with a tiny write at most once a second, so recovery shows without traffic.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import apsw

from bridge.domain.vocabulary import Reason
from bridge.errors import Unavailable
from bridge.settings import DEFAULTS
from bridge.store.migrate import migrate
from bridge.store.shared_base import StoreBase

T = TypeVar("T")
READER_CACHE_KIB = 512  # page cache of each thread's read connection (SQLite's default is 2 MiB): with 32 HTTP
# threads the default grew a server by ~64 MB on a big database; reads then come from the OS's shared file cache
log = logging.getLogger("bridge.store")


class BusyWait:
    """The busy handler of the bridge's connections: while another connection (another process) holds the lock,
    retry every 0.1 to 1 ms until `timeout` seconds have passed, then give up (SQLITE_BUSY). SQLite's own busy
    timeout sleeps in steps growing to 100 ms, so a writer waiting for another serving process's commit woke up to
    tens of milliseconds after the lock was free."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._since = 0.0

    def __call__(self, prior: int) -> bool:
        now = time.monotonic()
        if prior == 0:
            self._since = now
        elif now - self._since >= self.timeout:
            return False
        time.sleep(min(0.001, 0.0001 * (prior + 1)))
        return True


def connect(path: Path | str, *, synchronous: str = "FULL", busy_timeout: float = 5.0,
            create: bool = True, cache_kib: int | None = None) -> apsw.Connection:
    """Open a connection with the bridge's pragmas: WAL, chosen synchronous, foreign keys, busy timeout.

    `create=False` opens an existing file only: a missing one raises `apsw.CantOpenError` and nothing is created."""
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    conn = apsw.Connection(str(path), flags=flags)
    conn.set_busy_handler(BusyWait(busy_timeout))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    if cache_kib is not None:
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    return conn


def creation_problem(path: Path) -> str | None:
    """Why the database file `path` (and its data directory beside it) could not be created, or None if it can.

    An existing file needs nothing; otherwise the nearest existing ancestor must be a directory this process may
    write (missing directories below it are created)."""
    if path.exists():
        return None if path.is_file() else f"{path} exists and is not a file"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not a writable directory"
    return None


def storage_reason(exc: BaseException, system_errno: int = 0) -> Reason:
    """The `details.reason` of a storage failure: which of busy, disk full, file too large, read-only, I/O error.

    A file-size limit (RLIMIT_FSIZE: EFBIG, with SIGXFSZ ignored as Python does by default) reaches SQLite as
    SQLITE_IOERR_WRITE, like any I/O error: only the OS error number of the failed write tells them apart."""
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return Reason.DATABASE_BUSY
    if isinstance(exc, apsw.ReadOnlyError):
        return Reason.READ_ONLY
    if isinstance(exc, apsw.FullError) or system_errno in (errno.ENOSPC, errno.EDQUOT):
        return Reason.DISK_FULL
    if system_errno == errno.EFBIG:
        return Reason.FILE_TOO_LARGE
    return Reason.STORAGE_ERROR


def unavailable_from(exc: BaseException, conn: apsw.Connection | None = None) -> Unavailable:
    """Map an apsw failure (busy, locked, full, too large, I/O) to the UNAVAILABLE error with a reason; `conn` is
    the connection that failed (its OS error number separates a file-size limit from other I/O errors)."""
    system_errno = (conn.system_errno or 0) if conn is not None and isinstance(exc, apsw.IOError) else 0
    return Unavailable("the database is unavailable; nothing was written",
                       {"reason": storage_reason(exc, system_errno)}, retry_after=1)


_STORAGE_ERRORS = (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError, apsw.ReadOnlyError,
                   apsw.CantOpenError)
class Store(StoreBase):
    """One SQLite database file shared by every thread (and process) of the bridge."""

    keeps_signing_key = False  # the signing key is a file (mode 0600) beside it: backups copy this file as it is

    def __init__(self, path: Path | str, *, synchronous: str = DEFAULTS.synchronous,
                 busy_timeout: float = DEFAULTS.busy_timeout, write_batch: int = DEFAULTS.write_batch,
                 commit_poll: float = DEFAULTS.commit_poll, probe_interval: float = DEFAULTS.storage_probe_interval,
                 migrate_schema: bool = True, create: bool = True):
        """`create=False`: open an existing database only (a missing file raises `apsw.CantOpenError`, nothing is
        created); `create=True` also creates the file and its missing parent directories. `write_batch`: writes
        committed together at most; `commit_poll`: seconds between checks for other processes' commits while
        someone long-polls; `probe_interval`: seconds between storage probes while writes are failing."""
        super().__init__(probe_interval)
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.write_batch = write_batch
        self.commit_poll = commit_poll
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all_readers: list[apsw.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: deque[tuple[Callable[[apsw.Connection], Any], Future[Any]]] = deque()
        self._queue_cv = threading.Condition()
        self._writing = False  # a batch is committing (on the writer thread or inline on a caller's thread)
        writer_conn = connect(self.path, synchronous=synchronous, busy_timeout=busy_timeout, create=create)
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
            conn = connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout,
                           cache_kib=READER_CACHE_KIB)
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
            raise unavailable_from(exc, conn) from exc

    def query(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run a single-statement read `fn(conn)` in autocommit (one statement is its own snapshot; no BEGIN/COMMIT)."""
        conn = self.reader()
        try:
            return fn(conn)
        except _STORAGE_ERRORS as exc:
            raise unavailable_from(exc, conn) from exc

    # ------------------------------------------------------------------------------------------- writing
    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` in a `BEGIN IMMEDIATE` transaction (batched with concurrent writers); return after COMMIT."""
        future: Future[T] = Future()
        with self._queue_cv:
            if self._closed:
                raise Unavailable("the store is closed", {"reason": Reason.SHUTTING_DOWN})
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
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.write_batch))]
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
            error = self._write_failed(exc, conn) if isinstance(exc, apsw.Error) else Unavailable(
                "the write could not be completed; nothing was written", {"reason": Reason.STORAGE_ERROR})
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)

    def _commit_batch(self, conn: apsw.Connection,
                      batch: list[tuple[Callable[[apsw.Connection], Any], Future[Any]]]) -> None:
        """One transaction for the batch, one SAVEPOINT per operation (a lone operation needs none: the transaction
        is its own); answer every caller after COMMIT."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            error = self._write_failed(exc, conn)
            for _, future in batch:
                future.set_exception(error)
            return
        if len(batch) == 1:
            future, ok, value = self._run_alone(conn, *batch[0])
            if not ok:  # rolled back: nothing to commit
                future.set_exception(value)
                return
            outcomes = [(future, ok, value)]
        else:
            outcomes = [self._run_operation(conn, fn, future) for fn, future in batch]
        try:
            conn.execute("COMMIT")
        except apsw.Error as exc:
            error = self._write_failed(exc, conn)
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            for future, _, _ in outcomes:
                future.set_exception(error)
            return
        self._answer(outcomes)

    def _run_operation(self, conn: apsw.Connection, fn: Callable[[apsw.Connection], Any],
                       future: Future[Any]) -> tuple[Future[Any], bool, Any]:
        """Run one caller's `fn` in its own SAVEPOINT; a failure rolls back only that savepoint."""
        try:
            conn.execute("SAVEPOINT op")
            result = fn(conn)
            conn.execute("RELEASE op")
            return future, True, result
        except BaseException as exc:
            if not conn.in_transaction:
                # SQLITE_FULL / I/O errors roll the whole transaction back: nothing of the batch survives.
                raise
            try:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            except apsw.Error:
                raise exc from None  # this operation cannot be undone alone: the whole batch is rolled back
            error = self._write_failed(exc, conn) if isinstance(exc, _STORAGE_ERRORS) else exc
            return future, False, error

    def _run_alone(self, conn: apsw.Connection, fn: Callable[[apsw.Connection], Any],
                   future: Future[Any]) -> tuple[Future[Any], bool, Any]:
        """Run the batch's only operation directly in the transaction; a failure rolls the transaction back (then
        the outcome is not ok and nothing is left to commit)."""
        try:
            return future, True, fn(conn)
        except BaseException as exc:
            if not conn.in_transaction:
                raise  # SQLITE_FULL / I/O errors rolled the transaction back already
            try:
                conn.execute("ROLLBACK")
            except apsw.Error:
                raise exc from None
            error = self._write_failed(exc, conn) if isinstance(exc, _STORAGE_ERRORS) else exc
            return future, False, error

    def _answer(self, outcomes: list[tuple[Future[Any], bool, Any]]) -> None:
        """After COMMIT: the rows are durable, so nothing here may turn the write into an error for its callers."""
        self._committed()
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _write_failed(self, exc: BaseException, conn: apsw.Connection) -> Unavailable:
        """The UNAVAILABLE error of a failed write; a disk or I/O reason marks the store as degraded."""
        return self._record_failure(unavailable_from(exc, conn))

    # ------------------------------------------------------------------------------------------- waiting
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
            self.committed_elsewhere()  # a foreign commit after a waiter's check() but before `last` was read
            idle_since = time.monotonic()
            while not self._closed:
                time.sleep(self.commit_poll)
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
                    self.committed_elsewhere()
        finally:
            conn.close()

    # ------------------------------------------------------------------------------------------- lifecycle
    def schema_version(self) -> int:
        """The database's `PRAGMA user_version`."""
        return self.read(lambda c: c.execute("PRAGMA user_version").fetchall()[0][0])

    def pragmas(self) -> dict[str, Any]:
        """The effective pragmas of a connection from the factory (for tests and `doctor`)."""
        conn = self.reader()
        found = {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0]
                 for name in ("journal_mode", "synchronous", "foreign_keys")}
        return {**found, "busy_timeout": round(self.busy_timeout * 1000)}  # ms, waited by BusyWait

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


class savepoint:  # lower case: used like a function, `with savepoint(conn):`
    """A nested SAVEPOINT: rolled back (and released) when the block raises; the block's exception propagates.

    A class rather than a generator context manager: it is on every audited write, and costs a third as much."""

    __slots__ = ("conn", "name")

    def __init__(self, conn: apsw.Connection, name: str = "work"):
        self.conn, self.name = conn, name

    def __enter__(self) -> None:
        self.conn.execute(f"SAVEPOINT {self.name}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.conn.execute(f"RELEASE {self.name}")
        else:
            _undo_savepoint(self.conn, self.name)


def _undo_savepoint(conn: apsw.Connection, name: str) -> None:
    """Roll back to a savepoint, never hiding the error that made us: SQLITE_FULL and I/O errors may already have
    rolled the whole transaction back (no savepoint left), and the caller must still see that error."""
    if not conn.in_transaction:
        return
    try:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
    except apsw.Error:  # the enclosing operation cannot roll back to its own savepoint either: the batch aborts
        log.warning("could not roll back to a savepoint", extra={"event": "savepoint_rollback_failed"})
