"""Several `bridge serve` processes on one database file, and `kill -9` (SPEC §1, §7): seqs stay gapless and
unique across processes, an acknowledged message survives a crash, idempotent retries after a crash never
duplicate, and a long-poll wakes on a commit made by another process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import ApiClient

from bridge.store import db as db_module
from bridge.testing.database import query
from bridge.testing.processes import settings_env

pytestmark = pytest.mark.slow

# Neither the write quota nor the loop guard is under test here: switch them off in the servers.
NO_LIMITS = settings_env(write_quota_per_min=0, loop_guard_turns=0, loop_guard_repeats=0)


@contextlib.contextmanager
def clients(urls: list[str]) -> Iterator[list[ApiClient]]:
    """One HTTP client per url (requests sessions are not thread-safe), closed afterwards."""
    made = [ApiClient(url) for url in urls]
    try:
        yield made
    finally:
        for c in made:
            c.session.close()


def run_all(n: int, fn: Callable[[int], Any], *, barrier: bool = False) -> list[Any]:
    """Run fn(0..n-1) in n threads (optionally released together); exceptions propagate."""
    gate = threading.Barrier(n) if barrier else None

    def run(i: int) -> Any:
        if gate is not None:
            gate.wait(timeout=10)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=120) for f in futures]


def read_all(api: ApiClient, token: str, thread_id: str) -> list[dict[str, Any]]:
    """Every message of a thread, following next_seq."""
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        page = api.ok("read_messages", token, thread_id=thread_id, since_seq=since, limit=200)
        out += page["messages"]
        since = page["next_seq"]
        if not page["has_more"]:
            return out


def test_two_processes_allocate_gapless_unique_seqs(db, harness, make_token):
    coord = make_token("coord", "coordinator")
    tokens = {a: make_token(a) for a in ("alpha", "beta")}
    per_client = 50
    one, two = harness.serve("one", env=NO_LIMITS), harness.serve("two", env=NO_LIMITS)
    assert one.pid != two.pid
    with clients([one.url, two.url]) as (api1, api2):
        tid = api1.ok("create_thread", coord, title="Shared", type="workflow",
                      participants=["alpha", "beta"])["thread_id"]
        # four writers: each agent through each process, 2 x 100 posts in all
        lanes = [(one.url, "alpha"), (one.url, "beta"), (two.url, "alpha"), (two.url, "beta")]

        def lane(i: int) -> list[tuple[str, int, str]]:
            url, agent = lanes[i]
            acked = []
            with clients([url]) as (api,):
                for n in range(per_client):
                    body = f"lane{i}-{n}"
                    reply = api.ok("post_message", tokens[agent], thread_id=tid, schema_version=1, kind="chat",
                                   body=body)
                    acked.append((reply["message_id"], reply["seq"], body))
            return acked

        acked = [m for lane_acks in run_all(len(lanes), lane, barrier=True) for m in lane_acks]
        total = per_client * len(lanes)
        assert len(acked) == total

        stored = query(db, "SELECT seq, message_id, body FROM messages WHERE thread_id = ? ORDER BY seq",
                         (tid,))
        assert [seq for seq, _, _ in stored] == list(range(1, total + 1))  # gapless, unique
        by_id = {message_id: (seq, body) for seq, message_id, body in stored}
        for message_id, seq, body in acked:
            assert by_id.get(message_id) == (seq, body)
        assert len({seq for _, seq, _ in acked}) == total
        # each lane saw its own posts in increasing seq order
        for i in range(len(lanes)):
            mine = [seq for _, seq, body in acked if body.startswith(f"lane{i}-")]
            assert mine == sorted(mine)
        assert query(db, "SELECT latest_seq FROM threads WHERE thread_id = ?", (tid,)) == [(total,)]
        # both processes serve the same history
        assert [m["seq"] for m in read_all(api2, coord, tid)] == list(range(1, total + 1))
        assert read_all(api1, coord, tid) == read_all(api2, coord, tid)

        # idempotency holds across processes: 8 racing duplicates, 4 through each server -> one message
        payload = {"thread_id": tid, "schema_version": 1, "kind": "chat", "body": "exactly once",
                   "idempotency_key": "cross-process"}
        with clients([one.url, two.url] * 4) as racers:
            replies = run_all(8, lambda i: racers[i].call("post_message", tokens["alpha"], payload),
                              barrier=True)
        assert all(r.status == 200 for r in replies), [r.body for r in replies]
        assert len({r.body["message_id"] for r in replies}) == 1
        assert sum(1 for r in replies if r.body["replayed"] is False) == 1
        assert query(db, "SELECT COUNT(*), MIN(seq) FROM messages WHERE thread_id = ? AND idempotency_key = ?",
                       (tid, "cross-process")) == [(1, total + 1)]
    one.stop()
    two.stop()
    assert "Traceback" not in one.log_text() + two.log_text()


def test_kill_9_loses_no_acknowledged_message(db, harness, make_token):
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    total, writers, kill_after = 300, 4, 80
    acked: dict[str, tuple[str, int]] = {}  # idempotency key -> (message_id, seq)
    failed: list[str] = []                  # keys whose post got no answer (in flight at the crash)
    errors: list[Any] = []
    lock = threading.Lock()

    server = harness.serve("crash", env=NO_LIMITS)
    try:
        with clients([server.url]) as (api,):
            tid = api.ok("create_thread", coord, title="Crash", type="workflow", participants=["rev"])["thread_id"]

        def writer(i: int) -> None:
            with clients([server.url]) as (client,):
                for n in range(i, total, writers):
                    key = f"k{n}"
                    try:
                        reply = client.call("post_message", rev, {"thread_id": tid, "schema_version": 1,
                                                                  "kind": "chat", "body": f"m{n}",
                                                                  "idempotency_key": key})
                    except requests.RequestException:
                        with lock:
                            failed.append(key)
                        return  # the server is gone
                    with lock:
                        if reply.status == 200:
                            acked[key] = (reply.body["message_id"], reply.body["seq"])
                        else:
                            errors.append((key, reply.status, reply.body))

        with ThreadPoolExecutor(max_workers=writers) as pool:
            futures = [pool.submit(writer, i) for i in range(writers)]
            deadline = time.monotonic() + 60
            while len(acked) < kill_after and time.monotonic() < deadline and not errors:
                time.sleep(0.002)
            server.kill9()  # kill -9 while the writers are posting
            for f in futures:
                f.result(timeout=60)
    finally:
        server.kill9()

    assert errors == []
    assert kill_after <= len(acked) < total, "the crash did not happen mid-stream"
    assert failed, "no post was cut off by the crash"

    restarted = harness.serve("restart", env=NO_LIMITS)
    with clients([restarted.url]) as (api,):
        stored = read_all(api, coord, tid)
        seqs = [m["seq"] for m in stored]
        assert seqs == list(range(1, len(stored) + 1))  # no gap, no duplicate
        by_id = {m["message_id"]: m for m in stored}
        for key, (message_id, seq) in acked.items():
            assert message_id in by_id, f"acknowledged {key} ({message_id}) was lost"
            assert by_id[message_id]["seq"] == seq and by_id[message_id]["body"] == f"m{key[1:]}"
        # committed-but-unacknowledged rows may exist (SPEC §7: retry with the key); nothing else may
        assert len(stored) <= len(acked) + len(failed)

        # retrying the posts that got no answer never duplicates: replayed when they were committed
        for key in failed:
            reply = api.ok("post_message", rev, thread_id=tid, schema_version=1, kind="chat", body=f"m{key[1:]}",
                           idempotency_key=key)
            committed = [m for m in stored if m["body"] == f"m{key[1:]}"]
            if committed:
                assert reply["replayed"] is True and reply["message_id"] == committed[0]["message_id"]
            else:
                assert reply["replayed"] is False and reply["seq"] > len(stored)
        after = read_all(api, coord, tid)
        bodies = [m["body"] for m in after]
        assert len(bodies) == len(set(bodies))
        assert [m["seq"] for m in after] == list(range(1, len(after) + 1))
    restarted.stop()
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_long_poll_wakes_on_commit_by_another_process(live_server, harness, make_token):
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    api = live_server.client
    tid = api.ok("create_thread", coord, title="Wake", type="workflow", participants=["rev"])["thread_id"]
    other = harness.serve("other", env=NO_LIMITS)
    with clients([other.url, live_server.url]) as (writer, reader):
        box: dict[str, Any] = {}

        def wait_for_message() -> None:
            started = time.monotonic()
            box["result"] = reader.ok("read_messages", coord, thread_id=tid, since_seq=0, wait_ms=5000)
            box["elapsed"] = time.monotonic() - started
            box["done_at"] = time.monotonic()

        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(wait_for_message)
            time.sleep(0.4)
            assert not waiting.done(), "the long-poll returned before anything was posted"
            posted = writer.ok("post_message", rev, thread_id=tid, schema_version=1, kind="chat", body="from afar")
            posted_at = time.monotonic()
            waiting.result(timeout=15)
    assert [m["message_id"] for m in box["result"]["messages"]] == [posted["message_id"]]
    assert box["done_at"] - posted_at < 1.5
    assert box["elapsed"] < 4.0


def test_long_poll_sees_a_foreign_commit_racing_the_watcher_start(parts, monkeypatch):
    """A commit by another connection after the waiter's first check but before the cross-process watcher took
    its first `data_version` reading must still wake the waiter (not leave it asleep until the deadline)."""
    store = parts.bridge.store
    checked = threading.Event()
    real_connect = db_module.connect

    def connect_after_foreign_commit(*args: Any, **kwargs: Any) -> Any:
        conn = real_connect(*args, **kwargs)
        if threading.current_thread().name == "bridge-store-watcher":
            checked.wait(timeout=5)
            other = real_connect(store.path)  # stands in for another process: no in-process notification
            try:
                other.execute("INSERT INTO control (key, value, updated_at) VALUES ('probe', 'x', 0)")
            finally:
                other.close()
        return conn

    monkeypatch.setattr(db_module, "connect", connect_after_foreign_commit)

    def check() -> str | None:
        found = store.read(lambda c: [r[0] for r in c.execute("SELECT value FROM control WHERE key = 'probe'")])
        checked.set()
        return found[0] if found else None

    started = time.monotonic()
    assert store.wait_until(check, time.monotonic() + 4) == "x"
    assert time.monotonic() - started < 2.0
