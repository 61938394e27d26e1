"""Threads, participants and escalation records."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.store.rows import Where, dumps, one, rows, scalar


def insert_thread(conn: apsw.Connection, t: dict[str, Any]) -> None:
    """Insert a new thread row."""
    conn.execute(
        "INSERT INTO threads (thread_id, workspace_id, title, type, status, metadata, created_by, idempotency_key,"
        " request_hash, created_at, updated_at) VALUES (:thread_id, :workspace_id, :title, :type, 'active',"
        " :metadata, :created_by, :idempotency_key, :request_hash, :created_at, :created_at)",
        {**t, "metadata": dumps(t["metadata"])},
    )


def get_thread(conn: apsw.Connection, thread_id: str) -> dict[str, Any] | None:
    """The thread row, or None."""
    return one(conn, "SELECT * FROM threads WHERE thread_id = ?", (thread_id,))


def get_thread_seen_by(conn: apsw.Connection, thread_id: str, agent_id: str) -> dict[str, Any] | None:
    """The thread row plus `is_member` (1 when the agent is a participant), in one statement; or None."""
    return one(conn, "SELECT t.*, EXISTS (SELECT 1 FROM participants p WHERE p.thread_id = t.thread_id"
                     " AND p.agent_id = ?) AS is_member FROM threads t WHERE t.thread_id = ?", (agent_id, thread_id))


def find_by_idempotency_key(conn: apsw.Connection, workspace_id: str, created_by: str,
                            key: str) -> dict[str, Any] | None:
    """The thread a creator made with this idempotency key, or None."""
    return one(conn, "SELECT * FROM threads WHERE workspace_id = ? AND created_by = ? AND idempotency_key = ?",
               (workspace_id, created_by, key))


def list_threads(conn: apsw.Connection, workspace_id: str, *, member: str | None, status: str | None,
                 type_: str | None, participant: str | None, updated_since: int | None,
                 after: tuple[int, str] | None, limit: int) -> list[dict[str, Any]]:
    """Threads ordered by (updated_at, thread_id), filtered, starting after a keyset cursor."""
    where = Where("t.workspace_id = ?", workspace_id)
    for agent in (member, participant):
        where.when(agent, "EXISTS (SELECT 1 FROM participants p WHERE p.thread_id = t.thread_id AND p.agent_id = ?)")
    where.equal("t.status", status).equal("t.type", type_).when(updated_since, "t.updated_at >= ?")
    if after is not None:
        where.add("(t.updated_at, t.thread_id) > (?, ?)", *after)
    sql = f"SELECT * FROM threads t WHERE {where} ORDER BY t.updated_at, t.thread_id LIMIT ?"
    return rows(conn, sql, (*where.params, limit))


def set_status(conn: apsw.Connection, thread_id: str, expected: str, status: str, now: int) -> bool:
    """Compare-and-set the status; False when the status is no longer `expected`."""
    conn.execute("UPDATE threads SET status = ?, updated_at = ?, no_progress = 0 WHERE thread_id = ? AND status = ?",
                 (status, now, thread_id, expected))
    return conn.changes() == 1


def touch(conn: apsw.Connection, thread_id: str, now: int) -> None:
    """Bump a thread's updated_at."""
    conn.execute("UPDATE threads SET updated_at = ? WHERE thread_id = ?", (now, thread_id))


def participants(conn: apsw.Connection, thread_id: str) -> list[dict[str, Any]]:
    """Participants of a thread in the order they were added."""
    return rows(conn, "SELECT agent_id, thread_role, added_at FROM participants WHERE thread_id = ?"
                      " ORDER BY added_at, agent_id", (thread_id,))


def is_participant(conn: apsw.Connection, thread_id: str, agent_id: str) -> bool:
    """True when the agent is listed on the thread."""
    return scalar(conn, "SELECT 1 FROM participants WHERE thread_id = ? AND agent_id = ?",
                  (thread_id, agent_id)) is not None


def add_participant(conn: apsw.Connection, thread_id: str, agent_id: str, thread_role: str, now: int) -> bool:
    """Add a participant (or update its role); True when something changed."""
    current = scalar(conn, "SELECT thread_role FROM participants WHERE thread_id = ? AND agent_id = ?",
                     (thread_id, agent_id))
    if current == thread_role:
        return False
    conn.execute("INSERT INTO participants (thread_id, agent_id, thread_role, added_at) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (thread_id, agent_id) DO UPDATE SET thread_role = excluded.thread_role",
                 (thread_id, agent_id, thread_role, now))
    return True


def remove_participant(conn: apsw.Connection, thread_id: str, agent_id: str) -> bool:
    """Remove a participant; True when it was listed."""
    conn.execute("DELETE FROM participants WHERE thread_id = ? AND agent_id = ?", (thread_id, agent_id))
    return conn.changes() == 1


def open_escalation(conn: apsw.Connection, thread_id: str) -> dict[str, Any] | None:
    """The thread's open escalation record, or None."""
    return one(conn, "SELECT * FROM escalations WHERE thread_id = ? AND closed_at IS NULL", (thread_id,))


def insert_escalation(conn: apsw.Connection, thread_id: str, *, reason: str, escalated_by: str,
                      owner_agent_id: str | None, now: int, snapshot: dict[str, Any]) -> None:
    """Open an escalation record."""
    conn.execute("INSERT INTO escalations (thread_id, reason, escalated_by, owner_agent_id, opened_at, snapshot)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (thread_id, reason, escalated_by, owner_agent_id, now, dumps(snapshot)))


def set_escalation_owner(conn: apsw.Connection, thread_id: str, owner_agent_id: str) -> None:
    """Set the owner of the open escalation."""
    conn.execute("UPDATE escalations SET owner_agent_id = ? WHERE thread_id = ? AND closed_at IS NULL",
                 (owner_agent_id, thread_id))


def close_escalation(conn: apsw.Connection, thread_id: str, *, closed_by: str, reason: str, now: int) -> None:
    """Close the open escalation record (it is kept for history)."""
    conn.execute("UPDATE escalations SET closed_at = ?, closed_by = ?, close_reason = ?"
                 " WHERE thread_id = ? AND closed_at IS NULL", (now, closed_by, reason, thread_id))


def escalation_history(conn: apsw.Connection, thread_id: str) -> list[dict[str, Any]]:
    """Every escalation record of a thread, oldest first."""
    return rows(conn, "SELECT * FROM escalations WHERE thread_id = ? ORDER BY escalation_id", (thread_id,))


def count_by_status(conn: apsw.Connection, workspace_id: str) -> dict[str, int]:
    """Number of threads per status (for the `bridge_threads` gauge)."""
    return {r["status"]: r["n"] for r in rows(
        conn, "SELECT status, COUNT(*) AS n FROM threads WHERE workspace_id = ? GROUP BY status", (workspace_id,))}
