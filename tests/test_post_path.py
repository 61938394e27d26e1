"""The lean write path of post_message: a lone write runs without its own savepoint, and the statements a post
needs keep every rule (refusals audited, failures roll back, the loop guard's counter, strict JSON)."""

from __future__ import annotations

import threading
import time

import apsw
import pytest

from bridge.store import Store, open_store


def _count(store: Store) -> int:
    return store.read(lambda c: c.execute("SELECT COUNT(*) FROM control").fetchall()[0][0])


def _insert(key: str):
    def op(conn: apsw.Connection) -> str:
        conn.execute("INSERT INTO control (key, value, updated_at) VALUES (?, 'v', 1)", (key,))
        return key

    return op


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
        assert store.write(_insert("kept")) == "kept"
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
        entered, release = threading.Event(), threading.Event()

        def slow(conn: apsw.Connection) -> None:
            entered.set()
            release.wait(10)
            _insert("slow")(conn)

        def fails(conn: apsw.Connection) -> None:
            _insert("gone")(conn)
            raise LookupError("refused")

        errors: list[BaseException] = []

        def write_failing() -> None:
            try:
                store.write(fails)
            except LookupError as exc:
                errors.append(exc)

        first = threading.Thread(target=store.write, args=(slow,))
        first.start()
        assert entered.wait(10)
        others = [threading.Thread(target=store.write, args=(_insert("ok1"),)), threading.Thread(target=write_failing),
                  threading.Thread(target=store.write, args=(_insert("ok2"),))]
        for t in others:
            t.start()
        deadline = time.monotonic() + 10
        while len(store._queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        for t in [first, *others]:
            t.join(10)
        keys = store.read(lambda c: [r[0] for r in c.execute("SELECT key FROM control ORDER BY key")])
        assert keys == ["ok1", "ok2", "slow"]
        assert len(errors) == 1
