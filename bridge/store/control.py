"""Process-wide control flags shared through the database (write freeze), sessions and token revocations."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.store.rows import one, rows, scalar


def get_flag(conn: apsw.Connection, key: str) -> str | None:
    """A control flag's value, or None."""
    return scalar(conn, "SELECT value FROM control WHERE key = ?", (key,))


def set_flag(conn: apsw.Connection, key: str, value: str, now: int) -> None:
    """Set a control flag."""
    conn.execute("INSERT INTO control (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                 " SET value = excluded.value, updated_at = excluded.updated_at", (key, value, now))


def upsert_session(conn: apsw.Connection, s: dict[str, Any]) -> None:
    """Record a heartbeat or a launch in the runtime registry (the paused flag is kept; the runtime profile is
    replaced only when `s` carries a "profile" key, so a heartbeat never drops a launched agent's profile).
    `s["host_id"]` is the host the runtime runs on (None: any host)."""
    keep_profile = "profile" not in s
    conn.execute(
        "INSERT INTO sessions (workspace_id, agent_id, session_id, runtime, runtime_kind, status, resumable,"
        " management_mode, tmux_target, cwd, last_heartbeat_at, profile, host_id) VALUES (:workspace_id, :agent_id,"
        " :session_id, :runtime, :runtime_kind, :status, :resumable, :management_mode, :tmux_target, :cwd, :now,"
        " :profile, :host_id) ON CONFLICT (workspace_id, agent_id) DO UPDATE SET session_id = excluded.session_id,"
        " runtime = excluded.runtime, runtime_kind = excluded.runtime_kind, status = excluded.status,"
        " resumable = excluded.resumable, management_mode = excluded.management_mode,"
        " tmux_target = excluded.tmux_target, cwd = excluded.cwd, last_heartbeat_at = excluded.last_heartbeat_at,"
        " host_id = excluded.host_id" + ("" if keep_profile else ", profile = excluded.profile"),
        {"profile": None, **s},
    )


def get_session(conn: apsw.Connection, workspace_id: str, agent_id: str) -> dict[str, Any] | None:
    """The runtime registry entry of an agent, or None."""
    return one(conn, "SELECT * FROM sessions WHERE workspace_id = ? AND agent_id = ?", (workspace_id, agent_id))


def list_sessions(conn: apsw.Connection, workspace_id: str, *, host: str | None = None) -> list[dict[str, Any]]:
    """Every runtime registry entry of the workspace; with `host`, only those on it or with no host recorded."""
    if host is None:
        return rows(conn, "SELECT * FROM sessions WHERE workspace_id = ? ORDER BY agent_id", (workspace_id,))
    return rows(conn, "SELECT * FROM sessions WHERE workspace_id = ? AND (host_id IS NULL OR host_id = ?)"
                      " ORDER BY agent_id", (workspace_id, host))


def revoke(conn: apsw.Connection, kind: str, value: str, now: int, revoked_by: str, reason: str | None) -> None:
    """Record a revocation (by jti, session or agent); re-revoking an agent moves its cut-off to now."""
    conn.execute("INSERT INTO revocations (kind, value, revoked_at, revoked_by, reason) VALUES (?, ?, ?, ?, ?)"
                 " ON CONFLICT (kind, value) DO UPDATE SET revoked_at = excluded.revoked_at,"
                 " revoked_by = excluded.revoked_by, reason = excluded.reason", (kind, value, now, revoked_by, reason))


def revocation_reason(conn: apsw.Connection, *, jti: str, session_id: str, agent_id: str,
                      issued_at_ms: int) -> str | None:
    """Why a token is revoked (`jti`, `session` or `agent`), or None when it is not."""
    return scalar(conn, "SELECT kind FROM revocations WHERE (kind = 'jti' AND value = ?)"
                        " OR (kind = 'session' AND value = ?) OR (kind = 'agent' AND value = ? AND revoked_at > ?)"
                        " LIMIT 1", (jti, session_id, agent_id, issued_at_ms))


def agent_revoked_at(conn: apsw.Connection, agent_id: str) -> int | None:
    """The cut-off (ms) of the agent's revocation ("tokens issued before this"), or None."""
    return scalar(conn, "SELECT revoked_at FROM revocations WHERE kind = 'agent' AND value = ?", (agent_id,))


def set_session_fields(conn: apsw.Connection, workspace_id: str, agent_id: str, **fields: Any) -> bool:
    """Change some fields of an agent's registry entry (status, paused, tmux_target, ...); False if none."""
    columns = ", ".join(f"{name} = :{name}" for name in fields)
    conn.execute(f"UPDATE sessions SET {columns} WHERE workspace_id = :ws AND agent_id = :agent",
                 {**fields, "ws": workspace_id, "agent": agent_id})
    return conn.changes() == 1
