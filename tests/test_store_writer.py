"""The store's write path: an uncontended write commits on the caller's thread without a savepoint of its own (a
failure rolls it back whole); contended writes are still batched, each in its own savepoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import apsw
import pytest

from bridge.store import Store, open_store


def _insert(key: str):
    def op(conn: apsw.Connection) -> int:
        conn.execute("INSERT INTO control (key, value, updated_at) VALUES (?, 'v', 1)", (key,))
        return threading.get_ident()

    return op


def _count(store: Store) -> int:
    return store.read(lambda c: c.execute("SELECT COUNT(*) FROM control").fetchall()[0][0])


def test_an_uncontended_write_commits_on_the_callers_thread(tmp_path):
    with open_store(tmp_path / "b.db") as store:
        assert store.write(_insert("a")) == threading.get_ident()
        assert _count(store) == 1


def _behind_a_slow_write(store: Store, queued: list[Callable[[], object]]) -> None:
    """Run `queued` (each calls store.write) while a slow write holds the writer, so they queue and commit together
    once it ends; return when all are done."""
    entered, release = threading.Event(), threading.Event()

    def slow(conn: apsw.Connection) -> None:
        entered.set()
        release.wait(10)
        _insert("slow")(conn)

    first = threading.Thread(target=store.write, args=(slow,))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=call) for call in queued]
    for t in others:
        t.start()
    deadline = time.monotonic() + 10
    while len(store._queue) < len(queued) and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for t in [first, *others]:
        t.join(10)


def test_writes_arriving_during_a_commit_are_batched_into_one_commit(tmp_path):
    with open_store(tmp_path / "b.db") as store:
        commits: list[int] = []
        store.commit_listeners.append(lambda: commits.append(1))
        _behind_a_slow_write(store, [lambda i=i: store.write(_insert(f"k{i}")) for i in range(6)])
        assert _count(store) == 7
        assert len(commits) == 2  # the slow write, then the six queued behind it together


def test_a_lone_write_that_fails_is_rolled_back_and_commits_nothing(tmp_path):
    """The failing write's rows are gone, its own error reaches the caller, no commit is announced, and the next
    write commits normally."""
    with open_store(tmp_path / "b.db") as store:
        commits: list[int] = []
        store.commit_listeners.append(lambda: commits.append(1))

        def fails(conn: apsw.Connection) -> None:
            _insert("gone")(conn)
            raise LookupError("refused after writing")

        with pytest.raises(LookupError, match="refused after writing"):
            store.write(fails)
        assert _count(store) == 0
        assert commits == []
        assert store.write(_insert("kept")) == threading.get_ident()  # its result reaches the caller
        assert _count(store) == 1 and commits == [1]


def test_a_lone_write_runs_without_a_savepoint_of_its_own(tmp_path):
    """Statements of one uncontended write: BEGIN IMMEDIATE, the work, COMMIT."""
    with open_store(tmp_path / "b.db") as store:
        seen: list[str] = []
        store._writer_conn.exec_trace = lambda _cursor, sql, _bindings: seen.append(sql.strip()) or True
        store.write(_insert("a"))
        store._writer_conn.exec_trace = None
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
        assert not [sql for sql in seen if sql.startswith(("SAVEPOINT", "RELEASE"))]


def test_in_a_batch_a_failing_write_rolls_back_only_its_own_rows(tmp_path):
    """Several writes committed together still run in a SAVEPOINT each."""
    with open_store(tmp_path / "b.db") as store:
        def fails(conn: apsw.Connection) -> None:
            _insert("gone")(conn)
            raise LookupError("refused")

        errors: list[BaseException] = []

        def write_failing() -> None:
            try:
                store.write(fails)
            except LookupError as exc:
                errors.append(exc)

        _behind_a_slow_write(store, [lambda: store.write(_insert("ok1")), write_failing,
                                     lambda: store.write(_insert("ok2"))])
        keys = store.read(lambda c: [r[0] for r in c.execute("SELECT key FROM control ORDER BY key")])
        assert keys == ["ok1", "ok2", "slow"]
        assert len(errors) == 1


def test_close_waits_for_a_write_committing_on_a_callers_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    entered, results = threading.Event(), []

    def slow(conn: apsw.Connection) -> str:
        entered.set()
        time.sleep(0.2)
        _insert("late")(conn)
        return "done"

    writer = threading.Thread(target=lambda: results.append(store.write(slow)))
    writer.start()
    assert entered.wait(10)
    store.close()
    writer.join(10)
    assert results == ["done"]
    with open_store(tmp_path / "b.db") as reopened:
        assert _count(reopened) == 1
