"""The store on real files: pragmas, migrations, the append-only audit trail, group commit, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import apsw
import pytest

from bridge.errors import SchemaTooNew, Unavailable
from bridge.store import Store, connect, open_store
from bridge.store.db import READER_CACHE_KIB
from bridge.store.migrate import latest_version


def test_connection_factory_sets_pragmas(tmp_path):
    with open_store(tmp_path / "b.db") as store:
        assert store.pragmas() == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
        assert store.reader().execute("PRAGMA cache_size").fetchall()[0][0] == -READER_CACHE_KIB  # KiB
    with open_store(tmp_path / "n.db", synchronous="NORMAL", busy_timeout=7) as store:
        assert store.pragmas()["synchronous"] == 1
        assert store.pragmas()["busy_timeout"] == 7000


def test_migrations_are_applied_once_and_recorded(tmp_path):
    path = tmp_path / "b.db"
    with open_store(path) as store:
        assert store.schema_version() == latest_version() >= 1
    with open_store(path) as store:  # second start: nothing to apply, data intact
        assert store.schema_version() == latest_version()
        tables = store.read(lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")})
        assert {"threads", "messages", "participants", "audit_events", "revocations", "sessions"} <= tables


def test_newer_database_is_refused(tmp_path):
    path = tmp_path / "b.db"
    conn = connect(path)
    conn.execute(f"PRAGMA user_version={latest_version() + 5}")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        Store(path)
    assert "newer" in info.value.message
    assert info.value.details["database_version"] == latest_version() + 5


def _audit_row(conn: apsw.Connection) -> None:
    conn.execute("INSERT INTO audit_events (occurred_at, workspace_id, actor, actor_role, operation, outcome)"
                 " VALUES (1, 'default', 'a', 'operator', 'test', 'ok')")


def test_audit_trail_is_append_only(tmp_path):
    with open_store(tmp_path / "b.db") as store:
        store.write(_audit_row)
        with pytest.raises(apsw.ConstraintError, match="append-only"):
            store.write(lambda c: c.execute("UPDATE audit_events SET actor = 'x'"))
        with pytest.raises(apsw.ConstraintError, match="append-only"):
            store.write(lambda c: c.execute("DELETE FROM audit_events"))
        assert store.read(lambda c: c.execute("SELECT actor FROM audit_events").fetchall()) == [("a",)]


def _held_write(store: Store) -> tuple[threading.Thread, threading.Event]:
    """Start a write that holds the writer inside its transaction until the returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold(conn: apsw.Connection) -> None:
        _audit_row(conn)
        holding.set()
        assert release.wait(30)

    first = threading.Thread(target=store.write, args=(hold,))
    first.start()
    assert holding.wait(30)
    return first, release


def _start_queued(store: Store, writers: list[Callable[[], None]]) -> list[threading.Thread]:
    """Start one thread per writer (each calls `store.write` once); return once all are queued behind the writer."""
    threads = [threading.Thread(target=writer) for writer in writers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(store._queue) < len(writers):  # the store's queue of writes waiting for the writer
        assert time.monotonic() < deadline, "the writers never queued"
        time.sleep(0.005)
    return threads


def _count_commits(store: Store) -> list[int]:
    """Count the transactions SQLite itself commits on the store's writer connection (its commit hook)."""
    commits: list[int] = []

    def hook() -> bool:
        commits.append(1)
        return False  # False: let the commit go ahead

    store._writer_conn.set_commit_hook(hook)
    return commits


def test_concurrent_writers_are_batched_into_one_commit(tmp_path):
    """Group commit: eight writers arriving while a transaction is open end in ONE commit, not eight."""
    with open_store(tmp_path / "b.db") as store:
        commits = _count_commits(store)
        first, release = _held_write(store)
        ran_after: dict[int, int] = {}  # writer -> commits made before its operation ran

        def writer(i: int) -> None:
            def op(conn: apsw.Connection) -> None:
                _audit_row(conn)
                ran_after[i] = len(commits)

            store.write(op)

        writers = _start_queued(store, [lambda i=i: writer(i) for i in range(8)])
        release.set()
        for t in [first, *writers]:
            t.join(30)
        assert len(commits) == 2, commits  # the held write, then the eight together
        assert ran_after == dict.fromkeys(range(8), 1)  # all eight inside the second transaction
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_events").fetchall()[0][0]) == 9


def test_failed_write_in_a_batch_rolls_back_only_itself(tmp_path):
    """Writers batched into one commit: one failing op must not undo or break the others."""
    with open_store(tmp_path / "b.db") as store:
        commits = _count_commits(store)
        first, release = _held_write(store)
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            def op(conn: apsw.Connection) -> None:
                _audit_row(conn)
                if i % 2:
                    raise ValueError(i)

            try:
                store.write(op)
            except ValueError as exc:
                errors.append(exc)

        writers = _start_queued(store, [lambda i=i: writer(i) for i in range(8)])
        release.set()
        for t in [first, *writers]:
            t.join(30)
        assert len(commits) == 2, commits  # the four failures did not cost the batch its single commit
        assert sorted(e.args[0] for e in errors) == [1, 3, 5, 7]
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_events").fetchall()[0][0]) == 1 + 4


def test_busy_database_is_unavailable_and_writes_nothing(tmp_path):
    path = tmp_path / "b.db"
    with open_store(path, busy_timeout=0.2) as store:
        blocker = connect(path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(Unavailable) as info:
                store.write(_audit_row)
            assert info.value.details["reason"] == "database_busy"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_events").fetchall()[0][0]) == 0
        store.write(_audit_row)  # and it recovers once the lock is gone
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_events").fetchall()[0][0]) == 1


def test_a_write_waits_for_another_connections_lock_and_then_commits(tmp_path):
    """BusyWait retries while another connection (another process) holds the write lock, within the timeout."""
    path = tmp_path / "b.db"
    with open_store(path, busy_timeout=5) as store:
        blocker = connect(path)
        blocker.execute("BEGIN IMMEDIATE")
        released = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
        released.start()
        try:
            store.write(_audit_row)  # held for 0.3 s by the blocker, then committed here
        finally:
            released.join()
            blocker.close()
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_events").fetchall()[0][0]) == 1


def test_closed_store_refuses_writes(tmp_path):
    store = Store(tmp_path / "b.db")
    store.close()
    with pytest.raises(Unavailable):
        store.write(_audit_row)


def test_disk_full_is_unavailable_writes_nothing_and_the_writer_survives(tmp_path):
    """SQLITE_FULL (here from max_page_count) answers UNAVAILABLE/disk_full; later writes still work."""
    with open_store(tmp_path / "b.db") as store:
        pages = store.read(lambda c: c.execute("PRAGMA page_count").fetchall()[0][0])
        store.write(lambda c: c.execute(f"PRAGMA max_page_count={pages}"))

        def big(conn: apsw.Connection) -> None:
            conn.execute("INSERT INTO control (key, value, updated_at) VALUES ('big', ?, 1)", ("x" * 200_000,))

        with pytest.raises(Unavailable) as info:
            store.write(big)
        assert info.value.details["reason"] == "disk_full"
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM control").fetchall()[0][0]) == 0
        store.write(lambda c: c.execute("PRAGMA max_page_count=1073741823"))
        store.write(big)
        assert store.read(lambda c: c.execute("SELECT COUNT(*) FROM control").fetchall()[0][0]) == 1
