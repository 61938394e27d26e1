"""The incremental automatic-wake scan: folded candidates equal the full scan they replace, on a fresh database, on
one upgraded from schema 3 with unread history, and when several workers fold into the same database."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import apsw

from bridge.store import Store, connect, open_store
from bridge.store import triggers as trigger_store
from bridge.store.migrate import migrations
from bridge.store.rows import dialect, rows, scalar
from bridge.testing.references import full_wake_scan

WS = "default"
AGENTS = ("alice", "bob", "carol", "dave", "erin")
ROLES = ("reviewer", "author", "watcher")
UNFINISHED = "('queued', 'resume', 'spawn', 'awaiting_ack')"


def oracle(conn: apsw.Connection) -> list[tuple[str, str, int]]:
    found = rows(conn, full_wake_scan(dialect(conn)), {"ws": WS})
    return sorted((r["thread_id"], r["agent_id"], r["seq"]) for r in found)


def folded(store: Store, limit: int = 7) -> list[tuple[str, str, int]]:
    """Fold everything (small batches, one write each, as the worker does) and return the new candidates."""
    while store.read(trigger_store.has_unfolded):
        store.write(lambda c: trigger_store.fold_addressed(c, limit))
    return [(r["thread_id"], r["agent_id"], r["seq"]) for r in store.read(
        lambda c: trigger_store.wake_candidates(c, WS))]


def add_thread(conn: apsw.Connection, thread_id: str, status: str = "active", workspace: str = WS) -> None:
    conn.execute("INSERT INTO threads (thread_id, workspace_id, title, type, status, created_by, created_at,"
                 " updated_at) VALUES (?, ?, 't', 'conversation', ?, 'alice', 0, 0)", (thread_id, workspace, status))


def add_participant(conn: apsw.Connection, thread_id: str, agent: str, role: str) -> None:
    conn.execute("INSERT INTO participants (thread_id, agent_id, thread_role, added_at) VALUES (?, ?, ?, 0)"
                 " ON CONFLICT (thread_id, agent_id) DO UPDATE SET thread_role = excluded.thread_role",
                 (thread_id, agent, role))


def add_session(conn: apsw.Connection, agent: str, status: str) -> None:
    conn.execute("INSERT INTO sessions (workspace_id, agent_id, session_id, runtime, runtime_kind, status, resumable,"
                 " management_mode, last_heartbeat_at) VALUES (?, ?, ?, 'claude', 'claude', ?, 1, 'managed', 0)"
                 " ON CONFLICT (workspace_id, agent_id) DO UPDATE SET status = excluded.status",
                 (WS, agent, f"s-{agent}", status))


def post(conn: apsw.Connection, thread_id: str, sender: str, to_agents: list[Any] | None = None,
         to_role: str | None = None) -> int:
    seq = (scalar(conn, "SELECT latest_seq FROM threads WHERE thread_id = ?", (thread_id,)) or 0) + 1
    conn.execute("INSERT INTO messages (message_id, thread_id, seq, schema_version, kind, body, metadata,"
                 " sender_agent_id, sender_session_id, sender_role, to_agents, to_role, created_at)"
                 " VALUES (?, ?, ?, 1, 'chat', 'b', '{}', ?, 's', 'agent', ?, ?, 0)",
                 (f"{thread_id}-{seq}", thread_id, seq, sender,
                  None if to_agents is None else json.dumps(to_agents), to_role))
    conn.execute("UPDATE threads SET latest_seq = ? WHERE thread_id = ?", (seq, thread_id))
    return seq


def read_to(conn: apsw.Connection, thread_id: str, agent: str, seq: int) -> None:
    conn.execute("INSERT INTO read_cursors (thread_id, agent_id, last_read_seq, updated_at) VALUES (?, ?, ?, 0)"
                 " ON CONFLICT (thread_id, agent_id) DO UPDATE SET last_read_seq = excluded.last_read_seq",
                 (thread_id, agent, seq))


def mark(conn: apsw.Connection, thread_id: str, agent: str, seq: int) -> None:
    trigger_store.add_wake_mark(conn, thread_id, agent, seq, "trg", 0)


def seed_mix(conn: apsw.Connection, rng: random.Random, threads: int = 12, messages: int = 40) -> None:
    """Threads of every status and workspace, sessions of every status (and none), messages to everyone, to agents
    (also unknown ones, empty and odd JSON lists), to roles, own messages, and cursors anywhere."""
    for agent in AGENTS[:-1]:  # erin has no session
        add_session(conn, agent, rng.choice(("active", "idle", "offline")))
    for t in range(threads):
        thread_id = f"thr{t}"
        add_thread(conn, thread_id, rng.choice(("active", "blocked", "resolved", "closed")),
                   WS if t % 5 else "other")
        for agent in rng.sample(AGENTS, rng.randint(1, len(AGENTS))):
            add_participant(conn, thread_id, agent, rng.choice(ROLES))
        seed_messages(conn, rng, thread_id, messages)


def seed_messages(conn: apsw.Connection, rng: random.Random, thread_id: str, count: int) -> None:
    for _ in range(count):
        shape = rng.random()
        to_agents = (rng.sample((*AGENTS, "zed"), rng.randint(0, 2)) if shape < 0.4
                     else ["alice", "alice", 7, None] if shape < 0.45 else None)
        to_role = rng.choice(ROLES) if 0.3 < shape < 0.7 else None
        post(conn, thread_id, rng.choice(AGENTS), to_agents, to_role)
    latest = scalar(conn, "SELECT latest_seq FROM threads WHERE thread_id = ?", (thread_id,))
    for agent in AGENTS:
        if rng.random() < 0.5:
            read_to(conn, thread_id, agent, rng.randint(0, latest))


def mark_some(conn: apsw.Connection, rng: random.Random) -> None:
    for thread_id, agent, seq in oracle(conn):
        if rng.random() < 0.3:
            mark(conn, thread_id, agent, seq)


def test_explicit_cases_wake_exactly_who_the_full_scan_wakes(tmp_path):
    with open_store(tmp_path / "b.db") as store:
        def seed(conn: apsw.Connection) -> None:
            for agent, status in (("alice", "idle"), ("bob", "offline"), ("carol", "active"), ("dave", "idle")):
                add_session(conn, agent, status)
            add_thread(conn, "open")
            add_thread(conn, "shut", status="closed")
            for thread_id in ("open", "shut"):
                for agent, role in (("alice", "author"), ("bob", "reviewer"), ("carol", "reviewer"),
                                    ("dave", "watcher")):
                    add_participant(conn, thread_id, agent, role)
            post(conn, "open", "alice")                          # 1: everyone but alice
            post(conn, "open", "bob", to_agents=["alice"])       # 2: alice only
            post(conn, "open", "alice", to_role="reviewer")      # 3: bob and carol (carol is active)
            post(conn, "open", "dave", to_agents=["dave"])       # 4: dave's own message to himself
            post(conn, "open", "bob", to_agents=[])              # 5: addressed to no one
            read_to(conn, "open", "alice", 2)                    # alice has read her message
            post(conn, "shut", "alice")                          # closed thread: nobody
        store.write(seed)
        expected = [("open", "bob", 3), ("open", "dave", 1)]
        assert store.read(oracle) == expected
        assert folded(store) == expected
        store.write(lambda c: mark(c, "open", "bob", 3))         # woken once for seq 3
        assert store.read(oracle) == folded(store) == [("open", "dave", 1)]
        store.write(lambda c: post(c, "open", "alice", to_role="watcher"))  # 6: dave again, newer seq
        assert store.read(oracle) == folded(store) == [("open", "dave", 6)]
        store.write(lambda c: post(c, "open", "bob", to_agents=[]))  # 7: malformed JSON (on which the full scan
        store.write(lambda c: c.execute("UPDATE messages SET to_agents = 'not json' WHERE seq = 7"))  # failed)
        assert folded(store) == [("open", "dave", 6)]  # addresses no one, and later messages still fold
        store.write(lambda c: post(c, "open", "bob"))
        assert folded(store) == [("open", "alice", 8), ("open", "dave", 8)]


def test_random_mixes_match_the_full_scan_as_history_and_participants_change(tmp_path):
    rng = random.Random(11)
    with open_store(tmp_path / "b.db") as store:
        store.write(lambda c: seed_mix(c, rng))
        for _round in range(6):
            store.write(lambda c: mark_some(c, rng))
            assert folded(store) == store.read(oracle)
            # what changes between ticks: new messages, cursors, roles, members, sessions and thread status
            thread_id = f"thr{rng.randrange(12)}"
            store.write(lambda c, t=thread_id: seed_messages(c, rng, t, rng.randint(0, 30)))
            store.write(lambda c, t=thread_id: add_participant(c, t, rng.choice(AGENTS), rng.choice(ROLES)))
            store.write(lambda c, t=thread_id: c.execute(
                "DELETE FROM participants WHERE thread_id = ? AND agent_id = ?", (t, rng.choice(AGENTS))))
            store.write(lambda c: add_session(c, rng.choice(AGENTS), rng.choice(("active", "idle"))))
            store.write(lambda c, t=thread_id: c.execute("UPDATE threads SET status = ? WHERE thread_id = ?",
                                                         (rng.choice(("active", "closed")), t)))
        assert folded(store)  # the comparison above was not between two empty lists
        assert folded(store) == store.read(oracle)


def schema_3_database(path: Path) -> None:
    """A database as schema 3 left it (the migrations before the wake fold), holding unread history."""
    conn = connect(path)
    for number, _name, sql in migrations()[:3]:
        conn.execute(sql)
        conn.execute(f"PRAGMA user_version={number}")
    conn.close()


def test_a_database_upgraded_from_schema_3_wakes_the_same_agents(tmp_path):
    path = tmp_path / "old.db"
    schema_3_database(path)
    conn = connect(path)
    seed_mix(conn, random.Random(3))
    mark_some(conn, random.Random(4))
    before = oracle(conn)
    conn.close()
    assert before
    with open_store(path) as store:  # migrates to the current schema; the first fold is the backfill
        assert store.read(lambda c: scalar(c, "SELECT last_rowid FROM wake_folded")) == 0
        assert folded(store) == before == store.read(oracle)


def addressed(conn: apsw.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in rows(conn, "SELECT * FROM wake_addressed ORDER BY 1, 2, 3, 4")]


def test_interleaved_folds_of_two_workers_neither_lose_nor_duplicate(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "b.db"
    with open_store(path) as first, open_store(path) as second:
        first.write(lambda c: seed_mix(c, rng, threads=6, messages=10))
        workers = (first, second)
        for step in range(40):  # the two workers take turns folding small batches while messages keep coming
            workers[step % 2].write(lambda c: trigger_store.fold_addressed(c, 3))
            if step % 3 == 0:
                first.write(lambda c: seed_messages(c, rng, f"thr{rng.randrange(6)}", 4))
        for worker in workers:
            folded(worker, 3)
        total = first.read(lambda c: scalar(c, "SELECT MAX(rowid) FROM messages"))
        assert second.read(lambda c: scalar(c, "SELECT last_rowid FROM wake_folded")) == total
        incremental = first.read(addressed)
        first.write(lambda c: c.execute("UPDATE wake_folded SET last_rowid = 0"))  # a replay of everything at once
        first.write(lambda c: trigger_store.fold_addressed(c, total))
        assert first.read(addressed) == incremental
        first.write(lambda c: c.execute("DELETE FROM wake_addressed"))  # and the same from scratch
        first.write(lambda c: c.execute("UPDATE wake_folded SET last_rowid = 0"))
        first.write(lambda c: trigger_store.fold_addressed(c, total))
        assert first.read(addressed) == incremental
        assert folded(second) == second.read(oracle)


def test_a_worker_looking_only_at_what_changed_wakes_whom_the_full_scan_would(make_parts):
    """Between whole-workspace sweeps (none here after the first tick: a one-hour poll) the worker looks only at the
    threads of new messages, at candidates it could not wake last time and at agents whose session changed; after
    every tick nobody the full scan names is left unwoken, except those with a wake under way (woken once it ends)."""
    from bridge.worker.supervisor import Supervisor

    rng = random.Random(5)
    parts = make_parts(worker_poll="1h")
    store = parts.bridge.store
    supervisor = Supervisor(parts.bridge)
    store.write(lambda c: seed_mix(c, rng))
    for tick in range(40):
        supervisor._auto_wake(parts.bridge.clock())
        jobs = store.read(lambda c: rows(c, "SELECT thread_id, target_agent_id AS agent_id FROM trigger_jobs"
                                            f" WHERE status IN {UNFINISHED}"))
        under_way = {(j["thread_id"], j["agent_id"]) for j in jobs}
        left = store.read(oracle)
        assert {(t, a) for t, a, _ in left} <= under_way, (tick, left, under_way)
        # what changes between ticks: new messages (and cursors in their thread: seed_messages sets them anywhere),
        # sessions, thread status; some wakes finish
        thread_id = f"thr{rng.randrange(12)}"
        store.write(lambda c, t=thread_id: seed_messages(c, rng, t, rng.randint(1, 6)))
        if rng.random() < 0.3:
            store.write(lambda c: add_session(c, rng.choice(AGENTS), rng.choice(("active", "idle", "offline"))))
        if rng.random() < 0.2:  # closed is final (bridge/domain/lifecycle.py)
            store.write(lambda c, t=thread_id: c.execute(
                "UPDATE threads SET status = ? WHERE thread_id = ? AND status != 'closed'",
                (rng.choice(("active", "blocked", "resolved", "closed")), t)))
        finished = [j for j in jobs if rng.random() < 0.6]
        store.write(lambda c, done=finished: [c.execute(
            "UPDATE trigger_jobs SET status = 'delivered' WHERE thread_id = ? AND target_agent_id = ?"
            f" AND status IN {UNFINISHED}", (j["thread_id"], j["agent_id"])) for j in done])
    assert store.read(lambda c: scalar(c, "SELECT COUNT(*) FROM trigger_jobs")) > 20  # not between empty sets
