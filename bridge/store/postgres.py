"""The PostgreSQL store: the same surface as the SQLite `Store`, on a psycopg 3 connection pool.

The query modules of `bridge/store/` write their SQL once, with SQLite's `?` and `:name` parameters; `PgConnection`
gives them the apsw-like surface they use (`execute`, `changes`, `in_transaction`) and rewrites the parameters.

Writes run in SERIALIZABLE transactions: PostgreSQL then guarantees what SQLite's single writer does (every write
sees a world no concurrent write changed), on any number of servers. A transaction PostgreSQL aborts to keep that
promise (serialization failure, deadlock, a unique key a concurrent transaction just took) is rolled back and run
again from the start, so callers never see it; its second run finds what the winner committed (an idempotent
replay, the next seq). Every write transaction ends with a NOTIFY, so long-polls on every server wake on any commit.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import errors, pq
from psycopg.types.numeric import NumericLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.domain.location import redacted
from bridge.domain.vocabulary import Reason
from bridge.errors import Unavailable
from bridge.settings import DEFAULTS
from bridge.store.cannot_open import CannotOpen
from bridge.store.migrate import migrate, recorded_version
from bridge.store.shared_base import StoreBase

T = TypeVar("T")
log = logging.getLogger("bridge.store")

COMMIT_CHANNEL = "bridge_commit"  # NOTIFY channel: one notification per committed write transaction
# A write that lost a race runs again holding this lock, taken before its snapshot (LOCK TABLE needs none): the
# retries of one hot row (posts to one thread) then follow each other instead of aborting each other again. Only
# the migrator writes bridge_schema, so first attempts never wait for it.
RETRY_QUEUE = "LOCK TABLE bridge_schema IN SHARE ROW EXCLUSIVE MODE"
WRITE_ATTEMPTS = 30  # runs of one write before a persistent serialization conflict is reported as busy
_RETRY = (errors.SerializationFailure, errors.DeadlockDetected, errors.UniqueViolation)
_PARAMETER = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|::|\?|:([A-Za-z_]\w*)|%")


@lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """SQLite-style parameters (`?`, `:name`) as psycopg's (`%s`, `%(name)s`); a literal `%` doubled. Quoted text
    and `::` casts are left alone."""
    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if match.group(1) is not None:
            return f"%({match.group(1)})s"
        return token
    return _PARAMETER.sub(swap, sql)


class _NumberLoader(NumericLoader):
    """`numeric` (what SUM of integers returns) as int when whole, else float: the same values SQLite gives."""

    def load(self, data: Any) -> int | float:
        value: Decimal = super().load(data)
        return int(value) if value == value.to_integral_value() else float(value)


def configure(raw: psycopg.Connection[Any]) -> None:
    """Per-connection setup (the pool calls it for each new connection)."""
    raw.adapters.register_loader("numeric", _NumberLoader)


@contextlib.contextmanager
def connection(url: str) -> Iterator[PgConnection]:
    """A plain connection (no pool, no migration) in autocommit, closed after; an unreachable database raises
    CannotOpen. For tools that read or fill a database outside a running store (check, copy, tests)."""
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CannotOpen(Reason.DATABASE_UNAVAILABLE, str(exc).strip()) from exc
    with raw:
        configure(raw)
        yield PgConnection(raw)


class PgCursor:
    """The result of `PgConnection.execute`, shaped like an apsw cursor."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: psycopg.Cursor[Any]):
        self._cursor = cursor

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._cursor) if self._cursor.description is not None else iter(())

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def getdescription(self) -> tuple[tuple[str, str], ...]:
        return tuple((column.name, "") for column in self._cursor.description or ())

    def close(self) -> None:
        self._cursor.close()


class _NoRows:
    """The result of a statement that returns nothing and has not been sent yet (see `PgConnection.execute`)."""

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(())

    def fetchall(self) -> list[tuple[Any, ...]]:
        return []

    def getdescription(self) -> tuple[tuple[str, str], ...]:
        return ()

    def close(self) -> None:
        pass


NO_ROWS = _NoRows()
# Transaction control that returns nothing: held back and sent in one round trip with the next statement, so a
# write's BEGIN and SAVEPOINT travel together, and its RELEASE with its COMMIT.
_HELD_BACK = ("BEGIN", "SAVEPOINT", "RELEASE")


class PgConnection:
    """A pooled psycopg connection with the apsw surface the query modules use."""

    __slots__ = ("_changes", "_held", "_raw")
    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection[Any]):
        self._raw = raw
        self._changes = 0
        self._held: list[str] = []

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection, with every held-back statement sent (for cursors of its own)."""
        if self._held:
            self._raw.execute(self._take_held())
        return self._raw

    def _take_held(self) -> str:
        held = "; ".join(self._held)
        self._held.clear()
        return held

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor | _NoRows:
        """Run one statement. BEGIN, SAVEPOINT and RELEASE wait for the next statement: without parameters it goes
        in the same round trip (the result is the last statement's); with them, the held ones go just before it."""
        if not params and sql.startswith(_HELD_BACK):
            self._held.append(sql)
            return NO_ROWS
        if self._held and not params:
            sql = f"{self._take_held()}; {sql}"
        raw = self.raw
        cursor = raw.execute(to_postgres(sql), params) if params else raw.execute(sql)
        while cursor.nextset():  # several statements: the result is the last one's
            pass
        self._changes = cursor.rowcount
        return PgCursor(cursor)

    def changes(self) -> int:
        """Rows changed by the last statement."""
        return self._changes

    @property
    def in_transaction(self) -> bool:
        return self._raw.info.transaction_status != pq.TransactionStatus.IDLE or any(
            sql.startswith("BEGIN") for sql in self._held)

    def discard_held(self) -> None:
        """Forget the statements not sent yet (a rollback makes them moot)."""
        self._held.clear()


def storage_reason(exc: BaseException) -> Reason:
    """The `details.reason` of a PostgreSQL failure."""
    if isinstance(exc, (*_RETRY, errors.LockNotAvailable, PoolTimeout)):
        return Reason.DATABASE_BUSY
    if isinstance(exc, errors.DiskFull):
        return Reason.DISK_FULL
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return Reason.READ_ONLY
    if isinstance(exc, psycopg.OperationalError):
        return Reason.DATABASE_UNAVAILABLE
    return Reason.STORAGE_ERROR


def unavailable_from(exc: BaseException) -> Unavailable:
    return Unavailable("the database is unavailable; nothing was written", {"reason": storage_reason(exc)},
                       retry_after=1)


# Failures of the database itself (not of the SQL a caller sent): reported as UNAVAILABLE.
_STORAGE_ERRORS = (psycopg.OperationalError, PoolTimeout, errors.DiskFull, errors.ReadOnlySqlTransaction)


class PgStore(StoreBase):
    """A PostgreSQL database shared by every thread, process and host of the bridge."""

    dialect = "postgresql"
    keeps_signing_key = True  # every server and CLI on every host signs with the one key in the database

    def __init__(self, url: str, *, busy_timeout: float = DEFAULTS.busy_timeout, pool_size: int = 20,
                 probe_interval: float = DEFAULTS.storage_probe_interval, migrate_schema: bool = True, **_: Any):
        """`busy_timeout`: seconds a caller waits for a pooled connection, and a statement for a lock; `pool_size`:
        connections at most."""
        super().__init__(probe_interval)
        self.url = url
        self.display = redacted(url)
        self.busy_timeout = busy_timeout
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as first:  # fail fast when unreachable
            configure(first)
            if migrate_schema:
                migrate(PgConnection(first))
        # A statement waits at most `busy_timeout` for a lock another transaction holds (a stuck client, an
        # operator's open psql transaction), as a SQLite write waits for the file's lock: then 503 database_busy.
        lock_timeout = f"-c lock_timeout={max(1, round(busy_timeout * 1000))}"
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, timeout=busy_timeout,
                                    kwargs={"autocommit": True, "options": lock_timeout}, configure=configure,
                                    open=True, name="bridge-store")
        self._listener: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- reading
    @contextlib.contextmanager
    def _connection(self) -> Iterator[PgConnection]:
        try:
            with self._pool.connection() as raw:
                yield PgConnection(raw)
        except _STORAGE_ERRORS as exc:
            raise self._failed(exc) from exc

    def read(self, fn: Callable[[PgConnection], T]) -> T:
        """Run `fn(conn)` in one read-only snapshot."""
        with self._connection() as conn:
            conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return fn(conn)
            finally:
                conn.raw.execute("ROLLBACK")

    def query(self, fn: Callable[[PgConnection], T]) -> T:
        """Run a single-statement read `fn(conn)` outside a transaction (the statement is its own snapshot)."""
        with self._connection() as conn:
            return fn(conn)

    # ------------------------------------------------------------------------------------------- writing
    def write(self, fn: Callable[[PgConnection], T]) -> T:
        """Run `fn(conn)` in a SERIALIZABLE transaction, again from the start when PostgreSQL aborts it for a
        concurrent transaction; return after COMMIT."""
        if self._closed:
            raise Unavailable("the store is closed", {"reason": Reason.SHUTTING_DOWN})
        for attempt in range(WRITE_ATTEMPTS):
            with self._connection() as conn:
                try:
                    conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")  # sent with the first statement
                    if attempt:  # lost a race once: queue behind the other retries before the snapshot is taken
                        conn.execute(RETRY_QUEUE)
                    result = fn(conn)
                    conn.execute(f"NOTIFY {COMMIT_CHANNEL}; COMMIT")  # one round trip, with any RELEASE held back
                except _RETRY as exc:
                    self._rollback(conn)
                    if attempt + 1 == WRITE_ATTEMPTS:
                        raise unavailable_from(exc) from exc
                    if attempt >= 2:  # the winner has committed when we hear of it: retry at once, back off later
                        time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))
                    continue
                except BaseException:
                    self._rollback(conn)
                    raise
            self._committed()
            return result
        raise AssertionError("unreachable")

    @staticmethod
    def _rollback(conn: PgConnection) -> None:
        conn.discard_held()
        with contextlib.suppress(psycopg.Error):
            if conn.in_transaction:
                conn.raw.execute("ROLLBACK")

    def _failed(self, exc: BaseException) -> Unavailable:
        return self._record_failure(unavailable_from(exc))

    # ------------------------------------------------------------------------------------------- waiting
    def _ensure_watcher(self) -> None:
        """Long-polls wake on every commit of any server: LISTEN, on a connection of its own."""
        if self._listener is None or not self._listener.is_alive():
            self._listener = threading.Thread(target=self._listen, name="bridge-store-listener", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        """Wake long-polls on every commit of any server: `LISTEN` on a connection of its own."""
        while not self._closed:
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {COMMIT_CHANNEL}")
                    self.committed_elsewhere()  # a commit between a waiter's check() and LISTEN
                    while not self._closed:
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.committed_elsewhere()
            except psycopg.Error:
                log.warning("lost the commit listener; reconnecting", extra={"event": "listen_reconnect"})
                time.sleep(0.5)

    # ------------------------------------------------------------------------------------------- lifecycle
    def schema_version(self) -> int:
        """The schema version recorded by the migrator."""
        return self.query(recorded_version)

    def pragmas(self) -> dict[str, Any]:
        """The settings that matter for durability and isolation (for `doctor`)."""
        def read(conn: PgConnection) -> dict[str, Any]:
            return {name: conn.execute(f"SHOW {name}").fetchall()[0][0]
                    for name in ("server_version", "synchronous_commit", "fsync")}
        return {**self.query(read), "isolation": "serializable", "busy_timeout": round(self.busy_timeout * 1000)}

    def close(self) -> None:
        self._closed = True
        with self._commit_cv:
            self._commit_cv.notify_all()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(timeout=2)
