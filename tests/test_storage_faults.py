"""Storage faults on real files (runbooks/disk-full.md): a full disk and a file-size limit refuse writes with their
own reason and write nothing; `/ready` says so while writes fail and recovers by itself; a commit listener that
fails never turns a committed write into an error.

The faults are real, as in `bridge ops drill disk-full`: a 1 MiB tmpfs filled up (ENOSPC), and the RLIMIT_FSIZE
of a running `bridge serve` lowered with prlimit (EFBIG). The tests run as root (mount, prlimit); each fault is
undone at teardown (unmount, limit lifted, server stopped).
"""

from __future__ import annotations

import errno
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import ApiClient, LiveServer, call_as
from envelope import assert_envelope

from bridge.domain.models import CreateThreadInput, PostMessageInput
from bridge.errors import Unavailable
from bridge.services import messages as message_service
from bridge.services import threads as thread_service
from bridge.store import connect, savepoint
from bridge.testing.processes import settings_env, wait_until
from bridge.testing.tokens import Minter

BIG = "x" * 60_000  # one message: about 15 pages of the WAL
NO_LIMITS = {"write_quota_per_min": 0, "loop_guard_turns": 0, "loop_guard_repeats": 0}


# ------------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs) under tmp_path, unmounted at teardown (lazily if something still holds
    it open)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def disk_server(small_disk, make_parts, serve_parts) -> LiveServer:
    """A live bridge whose database lives on the small disk (closed before the disk is unmounted)."""
    parts = make_parts(db=str(small_disk / "bridge.db"), **NO_LIMITS)
    # A small page cache makes SQLite spill dirty pages to the WAL in the middle of a statement, as a large batch
    # does with the default cache: the disk-full error then arrives inside the service's own savepoint.
    parts.bridge.store.write(lambda conn: conn.execute("PRAGMA cache_size=10"))
    return serve_parts(parts)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full (ENOSPC); deleting it frees the space again."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (65536, 4096, 512, 1):
            try:
                while out.write(b"\0" * chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def count_messages(db: Path | str, thread_id: str) -> tuple[int, int]:
    """(rows in messages, latest_seq) of a thread, read through a connection of its own."""
    conn = connect(db)
    try:
        rows = conn.execute("SELECT COUNT(*) FROM messages WHERE thread_id = ?", (thread_id,)).fetchall()[0][0]
        latest = conn.execute("SELECT latest_seq FROM threads WHERE thread_id = ?", (thread_id,)).fetchall()[0][0]
        return rows, latest
    finally:
        conn.close()


def storage_refusal(reply: Any, reason: str) -> None:
    """503 UNAVAILABLE with Retry-After and the given storage reason."""
    error = assert_envelope(reply, 503, "UNAVAILABLE")
    assert error["details"]["reason"] == reason, error
    assert int(reply.headers["Retry-After"]) >= 1
    assert "nothing was written" in error["message"]


def not_ready(api: ApiClient, reason: str) -> None:
    """/ready answers 503 naming the storage check, with the reason of the failing writes."""
    reply = api.raw("GET", "/ready")
    error = assert_envelope(reply, 503, "UNAVAILABLE")
    assert error["details"]["failing"] == ["storage"], error
    assert error["details"]["checks"]["storage"] == f"writes failing: {reason}", error
    assert error["details"]["storage"]["reason"] == reason, error


def ignored_signals(pid: int) -> int:
    """The SigIgn mask of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn line")


def attempt_post(api: ApiClient, token: str, thread_id: str, body: str, key: str) -> Any:
    """A post that may be refused (with an idempotency key, so a retry is the same post): the Response."""
    return api.call("post_message", token, thread_id=thread_id, schema_version=1, kind="chat", body=body,
                    idempotency_key=key)


# ------------------------------------------------------------------------------------------------- disk full
def test_a_full_disk_is_disk_full_writes_nothing_and_ready_recovers_by_itself(disk_server, small_disk):
    """ENOSPC in the middle of a post (SQLITE_FULL, the transaction already rolled back by SQLite) answers
    disk_full, not a generic storage_error; /ready is 503 while writes fail and 200 again once space is free,
    without any write traffic; the refused post, retried, is a first write."""
    api, parts = disk_server.client, disk_server.parts
    coord = call_as("coord", "coordinator")
    thread_id = thread_service.create_thread(parts.bridge, coord, CreateThreadInput(
        title="disk", type="workflow", participants=["rev"]))["thread_id"]
    token = Minter(parts.key, parts.bridge.settings)("rev")
    acked = [api.ok("post_message", token, thread_id=thread_id, schema_version=1, kind="chat", body=f"small {i}")
             for i in range(2)]
    assert api.raw("GET", "/ready").status == 200

    filler = fill(small_disk)
    storage_refusal(attempt_post(api, token, thread_id, BIG, "big"), "disk_full")
    assert count_messages(parts.bridge.settings.db_path, thread_id) == (len(acked), len(acked))
    not_ready(api, "disk_full")
    not_ready(api, "disk_full")  # still full: the probe write fails too
    read = api.ok("read_messages", token, thread_id=thread_id, since_seq=0)
    assert [m["seq"] for m in read["messages"]] == [1, 2]  # reads keep working

    filler.unlink()  # space is free again: /ready notices without any request writing
    ready = wait_until(lambda: (lambda r: r if r.status == 200 else None)(api.raw("GET", "/ready")), 20, 0.1)
    assert ready, "gave up waiting: /ready 200"
    assert ready.body["checks"]["storage"] == "ok"
    retry = attempt_post(api, token, thread_id, BIG, "big")
    assert retry.status == 200 and retry.body["replayed"] is False and retry.body["seq"] == len(acked) + 1


def test_disk_full_inside_a_service_write_keeps_its_reason(small_disk, make_parts):
    """The same fault below HTTP: post_message raises UNAVAILABLE disk_full (the savepoint helper must not hide
    the FullError behind a failed ROLLBACK TO), the store is degraded, and a later commit clears it."""
    parts = make_parts(db=str(small_disk / "bridge.db"), **NO_LIMITS)
    store = parts.bridge.store
    store.write(lambda conn: conn.execute("PRAGMA cache_size=10"))
    coord = call_as("coord", "coordinator")
    thread_id = thread_service.create_thread(parts.bridge, coord, CreateThreadInput(
        title="disk", type="workflow", participants=["rev"]))["thread_id"]
    filler = fill(small_disk)
    with pytest.raises(Unavailable) as info:
        message_service.post_message(parts.bridge, coord, PostMessageInput(
            thread_id=thread_id, schema_version=1, kind="chat", body=BIG))
    assert info.value.details == {"reason": "disk_full"}, info.value.details
    assert store.storage_failure is not None and store.storage_failure.reason == "disk_full"
    assert count_messages(store.path, thread_id) == (0, 0)
    filler.unlink()
    message_service.post_message(parts.bridge, coord, PostMessageInput(
        thread_id=thread_id, schema_version=1, kind="chat", body=BIG))
    assert store.storage_failure is None
    assert count_messages(store.path, thread_id) == (1, 1)


# ------------------------------------------------------------------------------------------------- file-size limit
def test_a_file_size_limit_is_file_too_large_writes_nothing_and_ready_recovers(parts, make_token, harness):
    """`bridge serve` ignores SIGXFSZ, so a file-size limit (RLIMIT_FSIZE) fails the WAL write with EFBIG instead
    of killing the process; the post answers file_too_large (not a generic storage_error), nothing is written,
    /ready is 503 until the limit is lifted and 200 after it without a write; the retry is a first write."""
    db = parts.bridge.settings.db_path
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    server = harness.serve("serve", env=settings_env(**NO_LIMITS))
    assert all(ignored_signals(pid) & (1 << (signal.SIGXFSZ - 1)) for pid in server.pids), \
        "bridge serve (every serving process) must ignore SIGXFSZ"
    api = ApiClient(server.url)
    try:
        thread_id = api.ok("create_thread", coord, title="fsize", type="workflow",
                           participants=["rev"])["thread_id"]
        acked = [api.ok("post_message", rev, thread_id=thread_id, schema_version=1, kind="chat",
                        body=f"small {i}") for i in range(2)]
        limit = max([p.stat().st_size for p in db.parent.glob(db.name + "*")]
                    + [server.log_path.stat().st_size])
        _, hard = resource.prlimit(server.pid, resource.RLIMIT_FSIZE)
        for pid in server.pids:  # `bridge serve` and each serving process it forked
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))  # no file may grow any more
        try:
            refused = attempt_post(api, rev, thread_id, BIG, "big")
            assert refused.status == 503, refused.body
            assert count_messages(db, thread_id) == (len(acked), len(acked))
            not_ready(api, "file_too_large")
            storage_refusal(refused, "file_too_large")
            assert api.raw("GET", "/health").status == 200  # alive: the signal did not kill it
        finally:
            for pid in server.pids:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
        lifted = wait_until(lambda: api.raw("GET", "/ready").status == 200, 20, 0.1)
        assert lifted, "gave up waiting: /ready 200 after the limit is lifted"
        retry = attempt_post(api, rev, thread_id, BIG, "big")
        assert retry.status == 200 and retry.body["replayed"] is False and retry.body["seq"] == len(acked) + 1
    finally:
        api.session.close()


# ------------------------------------------------------------------------------------------------- after COMMIT
def test_a_failing_commit_listener_never_turns_a_committed_write_into_an_error(parts, caplog):
    """The rows are committed: every caller of the batch gets its result; the listener's failure is logged."""
    store = parts.bridge.store

    def broken() -> None:
        raise RuntimeError("listener bug")

    store.commit_listeners.append(broken)
    coord = call_as("coord", "coordinator")
    thread = thread_service.create_thread(parts.bridge, coord, CreateThreadInput(
        title="listener", type="workflow", participants=["rev"]))
    posted = message_service.post_message(parts.bridge, coord, PostMessageInput(
        thread_id=thread["thread_id"], schema_version=1, kind="chat", body="kept"))
    assert posted["seq"] == 1 and posted["replayed"] is False
    assert count_messages(store.path, thread["thread_id"]) == (1, 1)
    assert store.write(lambda conn: conn.execute("SELECT 7").fetchall()[0][0]) == 7
    assert any(r.getMessage() == "commit listener failed" for r in caplog.records)
    assert store.storage_failure is None


def test_a_failing_event_listener_never_turns_a_committed_write_into_an_error(parts):
    """Events emitted after COMMIT (metrics, the worker's nudges) cannot fail the write either."""
    def broken(name: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    parts.bridge.events.subscribe(broken)
    coord = call_as("coord", "coordinator")
    thread = thread_service.create_thread(parts.bridge, coord, CreateThreadInput(
        title="events", type="workflow", participants=["rev"]))
    posted = message_service.post_message(parts.bridge, coord, PostMessageInput(
        thread_id=thread["thread_id"], schema_version=1, kind="chat", body="kept"))
    assert posted["seq"] == 1
    assert count_messages(parts.bridge.store.path, thread["thread_id"]) == (1, 1)


def test_savepoint_helper_keeps_the_original_error_when_the_transaction_is_gone(tmp_path):
    """SQLITE_FULL rolled the transaction back (no savepoint left to roll back to): the FullError propagates."""
    conn = connect(tmp_path / "sp.db")
    try:
        conn.execute("CREATE TABLE t (x)")
        pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(apsw.FullError), savepoint(conn):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
        assert not conn.in_transaction
    finally:
        conn.close()
