"""Unread counts are `latest_seq - cursor - the agent's own messages after its cursor` (an index range, not a scan
of the unread history): checked against the direct count on seeded histories where every agent also posts, cursors
sit anywhere, and some agents have none."""

from __future__ import annotations

import random

import pytest

from bridge.store import messages as message_store
from bridge.store import open_store
from bridge.store.rows import rows, scalar
from bridge.store.seed import SeedPlan, agent_ids, seed

DIRECT = "SELECT COUNT(*) FROM messages WHERE thread_id = ? AND sender_agent_id != ? AND seq > ?"


def test_unread_counts_equal_the_direct_count(tmp_path):
    path = tmp_path / "bridge.db"
    with open_store(path):
        pass  # migrated
    seed(path, SeedPlan(threads=6, messages=900, participants=4, seed=7))
    rng = random.Random(11)
    with open_store(path) as store:
        threads = store.read(lambda c: [r["thread_id"] for r in rows(c, "SELECT thread_id FROM threads")])
        agents = [*agent_ids(4), "outsider"]

        def shuffle_cursors(conn):
            for thread_id in threads:
                latest = scalar(conn, "SELECT latest_seq FROM threads WHERE thread_id = ?", (thread_id,))
                for agent in agents:
                    if rng.random() < 0.2:
                        conn.execute("DELETE FROM read_cursors WHERE thread_id = ? AND agent_id = ?",
                                     (thread_id, agent))
                    else:
                        conn.execute("INSERT INTO read_cursors (thread_id, agent_id, last_read_seq, updated_at)"
                                     " VALUES (?, ?, ?, 0) ON CONFLICT (thread_id, agent_id)"
                                     " DO UPDATE SET last_read_seq = excluded.last_read_seq",
                                     (thread_id, agent, rng.randint(0, latest)))

        for _ in range(3):
            store.write(shuffle_cursors)
            for thread_id in threads:
                for agent in agents:
                    cursor = store.read(lambda c, t=thread_id, a=agent: message_store.get_cursor(c, t, a))
                    direct = store.read(lambda c, t=thread_id, a=agent, s=cursor: scalar(c, DIRECT, (t, a, s)))
                    counted = store.read(lambda c, t=thread_id, a=agent: message_store.unread_count(c, t, a))
                    assert counted == direct, (thread_id, agent, cursor)
            for agent in agent_ids(4):
                inbox = store.read(lambda c, a=agent: message_store.inbox(c, "default", a, 200))
                for entry in inbox:
                    direct = store.read(lambda c, e=entry, a=agent: scalar(
                        c, DIRECT, (e["thread_id"], a, e["last_read_seq"])))
                    assert entry["unread_count"] == direct > 0, (agent, entry)
                listed = {e["thread_id"] for e in inbox}
                unlisted = [t for t in threads if t not in listed and store.read(
                    lambda c, t=t, a=agent: scalar(c, "SELECT 1 FROM participants WHERE thread_id = ? AND agent_id = ?",
                                                   (t, a)))]
                for thread_id in unlisted:  # a thread left out of the inbox has nothing unread for the agent
                    assert store.read(lambda c, t=thread_id, a=agent: message_store.unread_count(c, t, a)) == 0


@pytest.mark.parametrize("few_threads", [1, 200], ids=["from-the-update-index", "from-memberships"])
def test_the_inbox_page_holds_the_newest_threads_with_unread_messages_from_others(tmp_path, monkeypatch, few_threads):
    """The limit counts threads with unread messages from others: a thread where only the agent's own messages are
    new is skipped, not counted; order is newest activity first (the direct count as reference), both for an agent
    in many threads (read in index order) and in few (its memberships, sorted)."""
    monkeypatch.setattr(message_store, "FEW_THREADS", few_threads)
    path = tmp_path / "bridge.db"
    with open_store(path):
        pass  # migrated
    seed(path, SeedPlan(threads=40, messages=2000, participants=3, seed=3))
    agent = agent_ids(3)[1]
    with open_store(path) as store:
        def own_news_only(conn):  # in every third thread the cursor sits just before the agent's own last message
            for i, row in enumerate(rows(conn, "SELECT thread_id FROM threads ORDER BY thread_id")):
                own = scalar(conn, "SELECT MAX(seq) FROM messages WHERE thread_id = ? AND sender_agent_id = ?",
                             (row["thread_id"], agent))
                latest = scalar(conn, "SELECT latest_seq FROM threads WHERE thread_id = ?", (row["thread_id"],))
                cursor = own - 1 if i % 3 == 0 and own == latest else latest if i % 3 == 1 else latest // 2
                conn.execute("INSERT INTO read_cursors (thread_id, agent_id, last_read_seq, updated_at)"
                             " VALUES (?, ?, ?, 0) ON CONFLICT (thread_id, agent_id)"
                             " DO UPDATE SET last_read_seq = excluded.last_read_seq", (row["thread_id"], agent, cursor))

        store.write(own_news_only)

        def expected(conn, limit):
            listed = []
            for row in rows(conn, "SELECT t.thread_id, t.updated_at, c.last_read_seq FROM threads t JOIN read_cursors c"
                                  " ON c.thread_id = t.thread_id AND c.agent_id = ? ORDER BY t.updated_at DESC,"
                                  " t.thread_id DESC", (agent,)):
                unread = scalar(conn, DIRECT, (row["thread_id"], agent, row["last_read_seq"]))
                if unread:
                    listed.append((row["thread_id"], unread))
            return listed[:limit]

        for limit in (1, 5, 12, 200):
            got = store.read(lambda c, n=limit: [(e["thread_id"], e["unread_count"])
                                                 for e in message_store.inbox(c, "default", agent, n)])
            assert got == store.read(lambda c, n=limit: expected(c, n)), limit
        assert len(store.read(lambda c: message_store.inbox(c, "default", agent, 200))) > 12  # pages were partial
