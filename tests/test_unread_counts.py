"""Unread counts are `latest_seq - cursor - the agent's own messages after its cursor` (an index range, not a scan
of the unread history): checked against the direct count on seeded histories where every agent also posts, cursors
sit anywhere, and some agents have none."""

from __future__ import annotations

import random

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
                        conn.execute("INSERT OR REPLACE INTO read_cursors (thread_id, agent_id, last_read_seq, "
                                     "updated_at) VALUES (?, ?, ?, 0)", (thread_id, agent, rng.randint(0, latest)))

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
