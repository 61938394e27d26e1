"""The append-only audit trail (database triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.store.rows import Where, dumps, rows


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
    where = _filters(workspace_id, thread_id, operation).add("audit_id > ?", after_id)
    return rows(conn, f"SELECT * FROM audit_events WHERE {where} ORDER BY audit_id LIMIT ?", (*where.params, limit))


def latest(conn: apsw.Connection, workspace_id: str, thread_id: str | None, limit: int,
           operation: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` audit events (optionally of one thread or operation), returned oldest first."""
    where = _filters(workspace_id, thread_id, operation)
    found = rows(conn, f"SELECT * FROM audit_events WHERE {where} ORDER BY audit_id DESC LIMIT ?",
                 (*where.params, limit))
    found.reverse()
    return found


def _filters(workspace_id: str, thread_id: str | None, operation: str | None) -> Where:
    return Where("workspace_id = ?", workspace_id).equal("thread_id", thread_id).equal("operation", operation)
