"""The append-only audit trail (database triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.store.rows import dumps, rows


def insert(conn: apsw.Connection, event: dict[str, Any]) -> None:
    """Append one audit event."""
    conn.execute(
        "INSERT INTO audit_events (occurred_at, workspace_id, actor, actor_role, operation, outcome, thread_id,"
        " request_id, reason, details) VALUES (:occurred_at, :workspace_id, :actor, :actor_role, :operation,"
        " :outcome, :thread_id, :request_id, :reason, :details)",
        {**event, "details": dumps(event.get("details") or {})},
    )


def query(conn: apsw.Connection, workspace_id: str, *, thread_id: str | None = None, operation: str | None = None,
          after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Audit events in insertion order, optionally for one thread or operation."""
    where, params = ["workspace_id = ?", "audit_id > ?"], [workspace_id, after_id]
    if thread_id is not None:
        where.append("thread_id = ?")
        params.append(thread_id)
    if operation is not None:
        where.append("operation = ?")
        params.append(operation)
    return rows(conn, f"SELECT * FROM audit_events WHERE {' AND '.join(where)} ORDER BY audit_id LIMIT ?",
                (*params, limit))


def latest(conn: apsw.Connection, workspace_id: str, thread_id: str | None, limit: int,
           operation: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` audit events (optionally of one thread or operation), returned oldest first."""
    where, params = ["workspace_id = ?"], [workspace_id]
    if thread_id is not None:
        where.append("thread_id = ?")
        params.append(thread_id)
    if operation is not None:
        where.append("operation = ?")
        params.append(operation)
    found = rows(conn, f"SELECT * FROM audit_events WHERE {' AND '.join(where)} ORDER BY audit_id DESC LIMIT ?",
                 (*params, limit))
    found.reverse()
    return found
