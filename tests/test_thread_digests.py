"""The summary's counts and open findings and the inbox's addressed-unread count come from state the insert triggers
keep (migration 7), not from the history: checked against the direct computation (the queries they replace) on an
explicit history and on random ones, as messages arrive and after migrating a database created at schema 6."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import apsw

from bridge.domain.summary import OPEN_ITEM_EVENTS, open_items, summarize
from bridge.services import threads as thread_service
from bridge.store import messages as message_store
from bridge.store import threads as thread_store
from bridge.store.db import connect
from bridge.store.migrate import latest_version, migrate, migrations
from bridge.store.rows import loads, rows, scalar

WORKSPACE = "default"
AGENTS = ("a1", "a2", "a3", "a4")
ROLES = {"a1": "author", "a2": "reviewer", "a3": "reviewer", "a4": "participant"}
FINDING_IDS: tuple[Any, ...] = ("F1", "F2", 1, 2, 1.0, 1e20, True, "True", False, None, {"x": 1}, [1])
DIGEST_TABLES = ("message_tallies", "event_tallies", "open_findings", "addressed_marks")

# ---------------------------------------------------------------------------------------- the direct computation
DIRECT_BY_KIND = "SELECT kind, COUNT(*) AS n FROM messages WHERE thread_id = ? GROUP BY kind"
DIRECT_BY_EVENT = ("SELECT event_type, COUNT(*) AS n FROM messages WHERE thread_id = ? AND event_type IS NOT NULL"
                   " GROUP BY event_type ORDER BY event_type")
DIRECT_BY_SENDER = ("SELECT sender_agent_id, COUNT(*) AS n, MAX(created_at) AS last_at FROM messages"
                    " WHERE thread_id = ? GROUP BY sender_agent_id")
DIRECT_UNREAD = "SELECT COUNT(*) FROM messages WHERE thread_id = ? AND sender_agent_id != ? AND seq > ?"
DIRECT_ADDRESSED = """
    SELECT COUNT(*) FROM messages m JOIN participants p ON p.thread_id = m.thread_id AND p.agent_id = :agent
    WHERE m.thread_id = :thread AND m.seq > :cursor AND m.sender_agent_id != :agent
      AND (m.to_agents IS NULL AND m.to_role IS NULL
           OR EXISTS (SELECT 1 FROM json_each(m.to_agents) j WHERE j.value = :agent) OR m.to_role = p.thread_role)"""


def direct_counts(conn: apsw.Connection, thread_id: str) -> dict[str, Any]:
    return {"by_kind": {r["kind"]: r["n"] for r in rows(conn, DIRECT_BY_KIND, (thread_id,))},
            "by_event_type": {r["event_type"]: r["n"] for r in rows(conn, DIRECT_BY_EVENT, (thread_id,))},
            "by_sender": {r["sender_agent_id"]: r for r in rows(conn, DIRECT_BY_SENDER, (thread_id,))}}


def direct_open_items(conn: apsw.Connection, thread_id: str) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(OPEN_ITEM_EVENTS))
    events = rows(conn, f"SELECT * FROM messages WHERE thread_id = ? AND kind = 'event' AND event_type IN ({marks})"
                        " ORDER BY seq", (thread_id, *OPEN_ITEM_EVENTS))
    return open_items({**e, "metadata": loads(e["metadata"])} for e in events)


def kept_open_items(conn: apsw.Connection, thread_id: str) -> list[dict[str, Any]]:
    return summary_of(conn, thread_id)["open_items"]


def summary_of(conn: apsw.Connection, thread_id: str) -> dict[str, Any]:
    return thread_service.build_summary(conn, thread_store.get_thread(conn, thread_id) or {})


def direct_summary(conn: apsw.Connection, thread_id: str) -> dict[str, Any]:
    """The summary built from the direct counts and open items (the rest read as build_summary reads it)."""
    latest_fix = message_store.latest_event(conn, thread_id, "fix_pushed")
    recent = message_store.latest_messages(conn, thread_id, 200)
    return summarize(thread_store.get_thread(conn, thread_id) or {}, thread_store.participants(conn, thread_id),
                     direct_counts(conn, thread_id), direct_open_items(conn, thread_id),
                     None if latest_fix is None else {**latest_fix, "metadata": loads(latest_fix["metadata"])},
                     recent, thread_store.open_escalation(conn, thread_id))


def check_against_direct(conn: apsw.Connection, thread_ids: list[str]) -> None:
    """Counts, open items, the whole summary and every agent's inbox equal the direct computation."""
    for thread_id in thread_ids:
        assert message_store.counts(conn, thread_id) == direct_counts(conn, thread_id), thread_id
        assert summary_of(conn, thread_id) == direct_summary(conn, thread_id), thread_id
    for agent in AGENTS:
        for entry in message_store.inbox(conn, WORKSPACE, agent, 1000):
            direct = scalar(conn, DIRECT_ADDRESSED, {"agent": agent, "thread": entry["thread_id"],
                                                     "cursor": entry["last_read_seq"]})
            unread = scalar(conn, DIRECT_UNREAD, (entry["thread_id"], agent, entry["last_read_seq"]))
            assert (entry["addressed_to_me"], entry["unread_count"]) == (direct, unread), (agent, entry)


# ---------------------------------------------------------------------------------------- histories
class History:
    """Threads and messages written straight through the store (the triggers see every insert path)."""

    def __init__(self, conn: apsw.Connection):
        self.conn = conn
        self.thread_ids: list[str] = []
        self.message_ids: dict[str, list[str]] = {}
        self.clock = 0

    def thread(self, roles: dict[str, str] = ROLES) -> str:
        thread_id = f"thr{len(self.thread_ids)}"
        with self.conn:
            thread_store.insert_thread(self.conn, {
                "thread_id": thread_id, "workspace_id": WORKSPACE, "title": thread_id, "type": "workflow",
                "metadata": {}, "created_by": "coord", "idempotency_key": None, "request_hash": None,
                "created_at": 0})
            for agent, role in roles.items():
                thread_store.add_participant(self.conn, thread_id, agent, role, 0)
        self.thread_ids.append(thread_id)
        self.message_ids[thread_id] = []
        return thread_id

    def post(self, thread_id: str, sender: str, kind: str = "chat", event_type: str | None = None, *,
             metadata: dict[str, Any] | None = None, in_reply_to: str | None = None,
             to_agents: list[str] | None = None, to_role: str | None = None, created_at: int | None = None) -> str:
        self.clock += 1
        message_id = f"{thread_id}-m{len(self.message_ids[thread_id]) + 1}"
        with self.conn:
            seq = message_store.next_seq(self.conn, thread_id, self.clock)
            message_store.insert_message(self.conn, {
                "message_id": message_id, "thread_id": thread_id, "seq": seq, "schema_version": 1, "kind": kind,
                "event_type": event_type, "body": f"{event_type or kind} {seq}\nmore", "metadata": metadata or {},
                "sender_agent_id": sender, "sender_session_id": f"{sender}-s", "sender_role": "participant",
                "in_reply_to": in_reply_to, "to_agents": to_agents, "to_role": to_role,
                "created_at": self.clock if created_at is None else created_at, "idempotency_key": None,
                "payload_hash": None})
        self.message_ids[thread_id].append(message_id)
        return message_id

    def set_cursor(self, thread_id: str, agent: str, seq: int) -> None:
        with self.conn:
            message_store.set_cursor(self.conn, thread_id, agent, seq, 0)

    def random_message(self, rng: random.Random, thread_id: str) -> None:
        earlier = self.message_ids[thread_id]
        kind = rng.choice(("chat", "chat", "event", "event", "event", "system"))
        event_type = {"chat": rng.choice((None, None, "", "finding_verified")),
                      "event": rng.choice(("finding_reported", "finding_reported", *OPEN_ITEM_EVENTS, "fix_pushed")),
                      "system": rng.choice((None, "resolved", "thread_resolved"))}[kind]
        metadata = {} if rng.random() < 0.2 else {"finding_id": rng.choice(FINDING_IDS), "severity": "high"}
        addressing = rng.random()
        to_agents = rng.choices((*AGENTS, "ghost"), k=rng.randint(0, 3)) if addressing < 0.4 else None
        to_role = rng.choice((*set(ROLES.values()), "nobody")) if 0.3 < addressing < 0.6 else None
        self.post(thread_id, rng.choice((*AGENTS, "bridge")), kind, event_type, metadata=metadata,
                  in_reply_to=rng.choice(earlier) if earlier and rng.random() < 0.4 else None,
                  to_agents=to_agents, to_role=to_role, created_at=rng.randint(0, 10_000))

    def random_cursors(self, rng: random.Random) -> None:
        for thread_id in self.thread_ids:
            for agent in AGENTS:
                if rng.random() < 0.8:
                    self.set_cursor(thread_id, agent, rng.randint(0, len(self.message_ids[thread_id])))


def migrated(path: Path, up_to: int | None = None) -> apsw.Connection:
    """A connection to a new database at the latest schema, or at schema `up_to` (applied as migrate() would)."""
    conn = connect(path)
    if up_to is None:
        migrate(conn)
        return conn
    for number, _name, sql in migrations()[:up_to]:
        with conn:
            conn.execute(sql)
            conn.execute(f"PRAGMA user_version={number}")
    return conn


def random_history(conn: apsw.Connection, seed: int, *, threads: int = 3, messages: int = 150) -> History:
    rng = random.Random(seed)
    history = History(conn)
    for _ in range(threads):
        history.thread()
    for _ in range(messages * threads):
        history.random_message(rng, rng.choice(history.thread_ids))
    history.random_cursors(rng)
    return history


# ---------------------------------------------------------------------------------------- tests
def test_explicit_history(tmp_path):
    conn = migrated(tmp_path / "b.db")
    h = History(conn)
    t = h.thread()
    f1 = h.post(t, "a2", "event", "finding_reported", metadata={"finding_id": "F1", "severity": "high"})
    h.post(t, "a2", "event", "finding_reported", metadata={"finding_id": 1})
    f3 = h.post(t, "a3", "event", "finding_reported", metadata={"finding_id": True, "file": "x.py", "line": 3})
    h.post(t, "a3", "event", "finding_reported", metadata={"finding_id": 1.0})
    h.post(t, "a1", "system", "resolved", metadata={"finding_id": "F1"})  # a system message closes nothing
    h.post(t, "a1", "chat", "finding_verified", in_reply_to=f3)  # nor does a chat message
    assert [i["message_id"] for i in kept_open_items(conn, t)] == [f1, f"{t}-m2", f3, f"{t}-m4"]
    h.post(t, "a1", "event", "finding_verified", metadata={"finding_id": "1"})  # closes finding_id 1, not 1.0
    h.post(t, "a1", "event", "finding_resolved", metadata={"finding_id": "True"})  # True and "True" compare equal
    h.post(t, "a1", "event", "resolved", in_reply_to=f1)
    h.post(t, "a2", "event", "finding_reported", metadata={"finding_id": "F1"})  # reported after its id was closed
    assert [i["message_id"] for i in kept_open_items(conn, t)] == [f"{t}-m4", f"{t}-m10"]

    h.post(t, "a1", to_agents=["a2", "a2", "ghost"])  # a2 once, though named twice
    h.post(t, "a1", to_role="reviewer")  # a2 and a3
    h.post(t, "a1", to_agents=["a2"], to_role="reviewer")  # a2 once, though named and by role
    h.post(t, "a2", to_role="reviewer")  # its own: not for a2
    h.post(t, "a3", to_agents=[])  # addressed to nobody
    h.set_cursor(t, "a2", 10)
    h.set_cursor(t, "a3", 12)
    addressed = {e["thread_id"]: e["addressed_to_me"] for e in message_store.inbox(conn, WORKSPACE, "a2", 10)}
    assert addressed == {t: 3}
    assert {e["thread_id"]: e["addressed_to_me"] for e in message_store.inbox(conn, WORKSPACE, "a3", 10)} == {t: 2}
    check_against_direct(conn, h.thread_ids)


def test_random_histories_as_they_grow(tmp_path):
    conn = migrated(tmp_path / "b.db")
    rng = random.Random(5)
    history = History(conn)
    for _ in range(4):
        history.thread()
    for _ in range(8):
        for _ in range(60):
            history.random_message(rng, rng.choice(history.thread_ids))
        history.random_cursors(rng)
        check_against_direct(conn, history.thread_ids)


def test_random_histories(tmp_path):
    for seed in range(6):
        conn = migrated(tmp_path / f"b{seed}.db")
        check_against_direct(conn, random_history(conn, seed).thread_ids)
        conn.close()


def table(conn: apsw.Connection, name: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)


def test_upgrade_from_schema_6_backfills_what_the_triggers_keep(tmp_path):
    """A database written at schema 6, then migrated, holds what one written at schema 7 holds; later posts go on."""
    for seed in range(3):
        old = migrated(tmp_path / f"old{seed}.db", up_to=6)
        history = random_history(old, seed, messages=200)
        assert migrate(old) == list(range(7, latest_version() + 1))  # 7 and whatever came after
        new = migrated(tmp_path / f"new{seed}.db")
        random_history(new, seed, messages=200)
        for name in DIGEST_TABLES:
            assert table(old, name) == table(new, name), (seed, name)
        check_against_direct(old, history.thread_ids)
        rng = random.Random(seed)
        for _ in range(300):  # the triggers carry on from the backfill
            history.random_message(rng, rng.choice(history.thread_ids))
        history.random_cursors(rng)
        check_against_direct(old, history.thread_ids)
        old.close()
        new.close()
