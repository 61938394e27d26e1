"""The worker's automatic-wake scan with 1k and 100k unread messages in one thread: the full scan it replaced (kept
here as the reference) against the incremental one (fold what is new, then read the folded table).

    python -m pytest benchmarks/test_bench_wake_scan.py --benchmark-only

One round is one tick's scan on a FULL-durability database: `full_scan` is the old query; `incremental` is the
tick's check for unfolded messages plus `wake_candidates`; `incremental_one_new` also folds one message posted
before the round (a write transaction). The one-time fold of the whole history (an upgraded database's first tick)
is timed too and lands in `extra_info["backfill_ms"]`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

from bridge.store import Store, open_store
from bridge.store import triggers as trigger_store
from bridge.store.rows import rows, scalar
from bridge.testing.references import full_wake_scan
from bridge.worker.supervisor import FOLD_BATCH

WS = "default"
THREAD = "thr-scan"

def seed(conn: apsw.Connection, count: int) -> None:
    """One open thread: alice posts `count` messages, to everyone, to bob, or to the reviewer role; bob (offline,
    a reviewer) has read none of them; carol (active) and dave (no session) are listed too."""
    conn.execute("INSERT INTO threads (thread_id, workspace_id, title, type, status, created_by, latest_seq,"
                 " created_at, updated_at) VALUES (?, ?, 'scan', 'conversation', 'active', 'alice', ?, 0, 0)",
                 (THREAD, WS, count))
    for agent, role in (("alice", "author"), ("bob", "reviewer"), ("carol", "reviewer"), ("dave", "watcher")):
        conn.execute("INSERT INTO participants (thread_id, agent_id, thread_role, added_at) VALUES (?, ?, ?, 0)",
                     (THREAD, agent, role))
    for agent, status in (("alice", "active"), ("bob", "offline"), ("carol", "active")):
        conn.execute("INSERT INTO sessions (workspace_id, agent_id, session_id, runtime, runtime_kind, status,"
                     " resumable, management_mode, last_heartbeat_at) VALUES (?, ?, ?, 'claude', 'claude', ?, 1,"
                     " 'managed', 0)", (WS, agent, f"s-{agent}", status))
    conn.execute("""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
        INSERT INTO messages (message_id, thread_id, seq, schema_version, kind, body, metadata, sender_agent_id,
                              sender_session_id, sender_role, to_agents, to_role, created_at)
        SELECT 'msg-' || i, :thread, i, 1, 'chat', 'body', '{}', 'alice', 's-alice', 'agent',
               CASE i % 3 WHEN 1 THEN '["bob"]' END, CASE i % 3 WHEN 2 THEN 'reviewer' END, i FROM n
    """, {"count": count, "thread": THREAD})


def post_one(conn: apsw.Connection) -> None:
    seq = scalar(conn, "UPDATE threads SET latest_seq = latest_seq + 1 WHERE thread_id = ? RETURNING latest_seq",
                 (THREAD,))
    conn.execute("INSERT INTO messages (message_id, thread_id, seq, schema_version, kind, body, metadata,"
                 " sender_agent_id, sender_session_id, sender_role, created_at)"
                 " VALUES (?, ?, ?, 1, 'chat', 'body', '{}', 'alice', 's-alice', 'agent', 0)",
                 (f"new-{seq}", THREAD, seq))


def fold_all(store: Store) -> None:
    while store.read(trigger_store.has_unfolded):
        store.write(lambda c: trigger_store.fold_addressed(c, FOLD_BATCH))


def full_scan(store: Store) -> list[dict[str, Any]]:
    return store.read(lambda c: rows(c, full_wake_scan("sqlite"), {"ws": WS}))


def incremental(store: Store) -> list[dict[str, Any]]:
    fold_all(store)
    return store.read(lambda c: trigger_store.wake_candidates(c, WS))


@pytest.fixture(scope="module", params=[1_000, 100_000], ids=["1k", "100k"])
def seeded(request, tmp_path_factory) -> Iterator[tuple[Store, int, float]]:
    with open_store(tmp_path_factory.mktemp("scan") / "b.db") as store:
        store.write(lambda c: seed(c, request.param))
        started = time.perf_counter()
        fold_all(store)
        yield store, request.param, (time.perf_counter() - started) * 1000


@pytest.mark.parametrize("scan", ["full_scan", "incremental", "incremental_one_new"])
def test_wake_scan(benchmark, seeded, scan):
    store, count, backfill_ms = seeded
    benchmark.extra_info.update({"unread_messages": count, "backfill_ms": round(backfill_ms, 1)})
    if scan == "incremental_one_new":
        found = benchmark.pedantic(incremental, args=(store,), setup=lambda: store.write(post_one),
                                   rounds=200, warmup_rounds=2)
    else:
        found = benchmark(full_scan if scan == "full_scan" else incremental, store)
    assert [(r["agent_id"], r["seq"]) for r in found] == [("bob", store.read(
        lambda c: scalar(c, "SELECT latest_seq FROM threads WHERE thread_id = ?", (THREAD,))))]
