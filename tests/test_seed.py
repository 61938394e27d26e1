"""`bridge ops seed`: the seeded history has the shape the services write, passes `bridge db check`, is served by a
live `bridge serve`, and a database that already has threads is refused unless --append."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from bridge.store.seed import agent_ids
from bridge.testing.client import read_thread
from bridge.testing.database import query
from bridge.testing.stack import Stack

THREADS, MESSAGES = 3, 601  # 201 + 200 + 200: spread evenly, not exactly divisible


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Iterator[tuple[Stack, dict]]:
    """A database created by the seed itself (no file before), and the seed's JSON report."""
    with Stack(tmp_path_factory.mktemp("seed"), timings={}) as stack:
        assert not stack.db.exists()
        done = stack.bridge("ops", "seed", "--db", str(stack.db), "--threads", str(THREADS), "--messages",
                            str(MESSAGES), "--participants", "3", "--seed", "7", "--json")
        assert done.returncode == 0, done.stderr
        yield stack, json.loads(done.stdout)


def test_seed_writes_the_planned_counts_with_gapless_seqs(seeded):
    stack, report = seeded
    assert (report["threads"], report["messages"], report["participants"]) == (THREADS, MESSAGES, 3)
    per_thread = stack.rows("SELECT t.thread_id, t.latest_seq, COUNT(m.seq) AS n, MIN(m.seq) AS low,"
                            " MAX(m.seq) AS high FROM threads t JOIN messages m USING (thread_id) GROUP BY t.thread_id")
    assert sorted(r["n"] for r in per_thread) == [200, 200, 201]
    assert all(r["low"] == 1 and r["high"] == r["n"] == r["latest_seq"] for r in per_thread)
    assert stack.query("SELECT COUNT(*) FROM participants") == [(THREADS * 3,)]
    assert {r[0] for r in stack.query("SELECT agent_id FROM sessions")} >= set(agent_ids(3))
    kinds = dict(stack.query("SELECT kind, COUNT(*) FROM messages GROUP BY kind"))
    assert kinds["chat"] > kinds["event"] > 0
    assert stack.query("SELECT COUNT(*) FROM messages WHERE to_agents IS NOT NULL")[0][0] > 0
    assert stack.query("SELECT COUNT(*) FROM messages WHERE event_type = 'finding_reported'")[0][0] == \
        stack.query("SELECT SUM(reports) FROM finding_reports")[0][0]
    assert stack.query("SELECT COUNT(*) FROM read_cursors")[0][0] == report["read_cursors"]
    check = stack.bridge("db", "check", "--db", str(stack.db), "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout


def test_a_live_server_serves_the_seeded_history(seeded):
    stack, _ = seeded
    server = stack.serve()
    reader = agent_ids(3)[1]
    thread_id, latest = stack.query("SELECT thread_id, latest_seq FROM threads ORDER BY latest_seq DESC LIMIT 1")[0]
    with stack.client(stack.token(reader, session_id=f"{reader}-seed")) as client:
        history = read_thread(client, thread_id)
        assert [m["seq"] for m in history] == list(range(1, latest + 1))
        tail = client.ok("read_messages", {"thread_id": thread_id, "since_seq": latest - 10, "limit": 50})
        assert [m["seq"] for m in tail["messages"]] == list(range(latest - 9, latest + 1))
        inbox = client.ok("inbox", {})["threads"]
        unread = {t["thread_id"]: t["unread_count"] for t in inbox}
        for thread in stack.rows("SELECT t.thread_id, COUNT(m.seq) AS n FROM threads t JOIN messages m"
                                 " ON m.thread_id = t.thread_id AND m.sender_agent_id != ? AND m.seq >"
                                 " COALESCE((SELECT last_read_seq FROM read_cursors c WHERE c.thread_id = t.thread_id"
                                 " AND c.agent_id = ?), 0) GROUP BY t.thread_id", (reader, reader)):
            assert unread.get(thread["thread_id"], 0) == thread["n"]
        summary = client.ok("summarize_thread", {"thread_id": thread_id})
        assert summary["counts"] and summary["open_items"]
        assert all(item["finding_id"] and item["file"] for item in summary["open_items"])
        posted = client.ok("post_message", {"thread_id": thread_id, "schema_version": 1, "kind": "chat",
                                            "body": "after the seed"})
        assert posted["seq"] == latest + 1
    server.stop()  # the refusal test below compares the file's bytes


def test_a_database_with_threads_is_refused_unless_append(seeded):
    stack, _ = seeded
    before = hashlib.sha256(stack.db.read_bytes()).hexdigest()
    threads_before = stack.query("SELECT COUNT(*) FROM threads")[0][0]
    refused = stack.bridge("ops", "seed", "--db", str(stack.db), "--threads", "1", "--messages", "5", "--json")
    assert refused.returncode == 2
    assert json.loads(refused.stderr)["error"]["code"] == "INVALID_ARGUMENT"
    assert hashlib.sha256(stack.db.read_bytes()).hexdigest() == before  # not even a migration or a checkpoint
    appended = stack.bridge("ops", "seed", "--db", str(stack.db), "--threads", "2", "--messages", "50", "--append")
    assert appended.returncode == 0, appended.stderr
    assert stack.query("SELECT COUNT(*) FROM threads")[0][0] == threads_before + 2
    assert stack.bridge("db", "check", "--db", str(stack.db)).returncode == 0


def test_a_postgresql_database_is_refused_with_the_way_to_seed_it(seeded, postgres_url):
    stack, _ = seeded
    refused = stack.bridge("ops", "seed", "--db", postgres_url, "--threads", "1", "--messages", "5", "--json")
    assert refused.returncode == 2, refused.stderr
    assert "bridge db copy" in json.loads(refused.stderr)["error"]["message"]
    assert query(postgres_url, "SELECT to_regclass('threads') IS NULL") == [(True,)]  # nothing was created
