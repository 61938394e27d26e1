"""The store's write path: an uncontended write commits on the caller's thread; contended writes are still batched."""

from __future__ import annotations

import threading
import time

import apsw

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


def test_writes_arriving_during_a_commit_are_batched_into_one_commit(tmp_path):
    with open_store(tmp_path / "b.db") as store:
        commits: list[int] = []
        store.commit_listeners.append(lambda: commits.append(1))
        entered, release = threading.Event(), threading.Event()

        def slow(conn: apsw.Connection) -> None:
            entered.set()
            release.wait(10)
            _insert("slow")(conn)

        first = threading.Thread(target=store.write, args=(slow,))
        first.start()
        assert entered.wait(10)
        others = [threading.Thread(target=store.write, args=(_insert(f"k{i}"),)) for i in range(6)]
        for t in others:
            t.start()
        deadline = time.monotonic() + 10
        while len(store._queue) < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        for t in [first, *others]:
            t.join(10)
        assert _count(store) == 7
        assert len(commits) == 2  # the slow write, then the six queued behind it together


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
