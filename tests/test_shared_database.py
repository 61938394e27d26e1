"""Two bridges on one database (two servers on one SQLite file, or on one PostgreSQL database from several hosts):
seqs stay gapless under concurrent writers, an idempotent post races into one message, and a long-poll on one
bridge wakes on a post made through the other."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apsw
import psycopg
import pytest
from conftest import call_as
from helpers import create_thread

from bridge.domain.models import PostMessageInput, ReadMessagesInput
from bridge.errors import IdempotencyConflict, Unavailable
from bridge.services import messages as message_service
from bridge.testing.database import query

UNLIMITED = {"write_quota_per_min": 0, "loop_guard_turns": 0}


@pytest.fixture
def two_bridges(make_parts) -> tuple[Any, Any]:
    first = make_parts(**UNLIMITED)
    return first, make_parts(db=first.bridge.settings.db, **UNLIMITED)


def _post(parts: Any, sender: str, thread_id: str, body: str, key: str | None = None) -> dict[str, Any]:
    request = PostMessageInput(thread_id=thread_id, schema_version=1, kind="chat", body=body, idempotency_key=key)
    return message_service.post_message(parts.bridge, call_as(sender), request)


def test_concurrent_posts_through_two_bridges_get_gapless_seqs(two_bridges):
    first, second = two_bridges
    thread_id = create_thread(first, call_as("coord", "coordinator"), ("rev", "exec"))
    writers, each = 8, 12

    def write(n: int) -> list[int]:
        parts, sender = (first, "rev") if n % 2 else (second, "exec")
        return [_post(parts, sender, thread_id, f"w{n}-{i}")["seq"] for i in range(each)]

    with ThreadPoolExecutor(writers) as pool:
        answered = [seq for seqs in pool.map(write, range(writers)) for seq in seqs]
    assert sorted(answered) == list(range(1, writers * each + 1))
    stored = query(first, "SELECT seq, body FROM messages WHERE thread_id = ? ORDER BY seq", (thread_id,))
    assert [seq for seq, _ in stored] == list(range(1, writers * each + 1))
    assert len({body for _, body in stored}) == writers * each  # every post once


def test_an_idempotent_post_racing_through_two_bridges_is_one_message(two_bridges):
    first, second = two_bridges
    thread_id = create_thread(first, call_as("coord", "coordinator"), ("rev", "exec"))
    start = threading.Barrier(8)

    def race(n: int) -> dict[str, Any]:
        start.wait()
        return _post(first if n % 2 else second, "rev", thread_id, "the finding", key="k-race")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(race, range(8)))
    assert len({(r["message_id"], r["seq"]) for r in results}) == 1
    assert query(first, "SELECT COUNT(*) FROM messages WHERE thread_id = ? AND idempotency_key = ?",
                 (thread_id, "k-race")) == [(1,)]
    with pytest.raises(IdempotencyConflict):
        _post(second, "rev", thread_id, "another payload", key="k-race")


def test_a_long_poll_on_one_bridge_wakes_on_a_post_through_the_other(two_bridges):
    first, second = two_bridges
    thread_id = create_thread(first, call_as("coord", "coordinator"), ("rev", "exec"))
    waiting: dict[str, Any] = {}

    def long_poll() -> None:
        request = ReadMessagesInput(thread_id=thread_id, since_seq=0, wait_ms=20_000)
        waiting["page"] = message_service.read_messages(first.bridge, call_as("exec"), request)

    reader = threading.Thread(target=long_poll)
    reader.start()
    while first.bridge.waits.held == 0:  # the long-poll holds its slot: it is waiting (or about to look once)
        time.sleep(0.01)
    time.sleep(0.3)  # let its first look find nothing, so only a wake-up can end the wait early
    posted = _post(second, "rev", thread_id, "wake up")
    reader.join(timeout=10)  # well before the 20 s deadline: only a wake-up from the other bridge ends it this soon
    assert not reader.is_alive()
    assert [m["message_id"] for m in waiting["page"]["messages"]] == [posted["message_id"]]


@contextlib.contextmanager
def another_program_locks_the_messages(db: str) -> Iterator[None]:
    """A transaction of another program that holds what a post must write (the SQLite file's write lock; the
    PostgreSQL messages table), until the block ends."""
    if db.startswith("postgresql://"):
        with psycopg.connect(db, autocommit=True) as holder:
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
            yield
            holder.execute("ROLLBACK")
        return
    holder = apsw.Connection(db)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def test_a_lock_held_by_another_program_makes_a_post_busy_then_it_goes_through(make_parts, db):
    parts = make_parts(busy_timeout=0.5, **UNLIMITED)
    thread_id = create_thread(parts, call_as("coord", "coordinator"), ("rev", "exec"))
    outcome: dict[str, BaseException] = {}

    def blocked_post() -> None:
        try:
            _post(parts, "rev", thread_id, "blocked")
        except BaseException as exc:  # the test looks at what it was
            outcome["error"] = exc

    with another_program_locks_the_messages(db):
        poster = threading.Thread(target=blocked_post, daemon=True)
        poster.start()
        poster.join(timeout=30)  # a wait bounded by BRIDGE_BUSY_TIMEOUT ends long before; an endless one does not
        gave_up = not poster.is_alive()
    poster.join(timeout=30)
    assert gave_up, "the post waited for the lock without a bound"
    assert isinstance(outcome.get("error"), Unavailable), outcome
    assert outcome["error"].details["reason"] == "database_busy"
    assert query(parts, "SELECT COUNT(*) FROM messages WHERE thread_id = ?", (thread_id,)) == [(0,)]
    assert _post(parts, "rev", thread_id, "after")["seq"] == 1
