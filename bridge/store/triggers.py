"""Trigger jobs, their attempts, automatic-wake marks and runtime failures."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.store.rows import one, rows, scalar

_JOB_FIELDS = ("trigger_id", "workspace_id", "thread_id", "target_agent_id", "reason", "prompt", "origin",
               "requested_by", "request_id", "request_hash", "force", "action", "fallback_action", "decision",
               "status", "next_attempt_at", "tmux_target", "trigger_seq", "created_at", "updated_at")


def insert_job(conn: apsw.Connection, job: dict[str, Any]) -> None:
    """Insert a new trigger job."""
    columns, values = ", ".join(_JOB_FIELDS), ", ".join(":" + f for f in _JOB_FIELDS)
    conn.execute(f"INSERT INTO trigger_jobs ({columns}) VALUES ({values})", {f: job.get(f) for f in _JOB_FIELDS})


def get_job(conn: apsw.Connection, trigger_id: str) -> dict[str, Any] | None:
    """A job by id, or None."""
    return one(conn, "SELECT * FROM trigger_jobs WHERE trigger_id = ?", (trigger_id,))


def find_by_request(conn: apsw.Connection, workspace_id: str, requested_by: str,
                    request_id: str) -> dict[str, Any] | None:
    """The job a requester created with this request id, or None."""
    return one(conn, "SELECT * FROM trigger_jobs WHERE workspace_id = ? AND requested_by = ? AND request_id = ?",
               (workspace_id, requested_by, request_id))


_DUE = ("workspace_id = ? AND (status IN ('queued', 'resume', 'spawn') AND next_attempt_at <= ?"
        " OR status = 'awaiting_ack') AND (lease_until IS NULL OR lease_until <= ?)")


def _skipping(skip: set[str] | None) -> tuple[str, tuple[str, ...]]:
    ids = tuple(sorted(skip or ()))
    return (f" AND trigger_id NOT IN ({', '.join('?' * len(ids))})" if ids else ""), ids


def any_due(conn: apsw.Connection, workspace_id: str, now: int, skip: set[str] | None = None) -> bool:
    """True when claim_due would find a job (a read: most ticks have nothing to claim and need no write)."""
    extra, ids = _skipping(skip)
    return scalar(conn, f"SELECT 1 FROM trigger_jobs WHERE {_DUE}{extra} LIMIT 1",
                  (workspace_id, now, now, *ids)) is not None


def claim_due(conn: apsw.Connection, workspace_id: str, now: int, lease_ms: int, token: str,
              limit: int, skip: set[str] | None = None) -> list[dict[str, Any]]:
    """Lease due, unleased (or lease-expired) jobs, except those in `skip`, to `token`; return them. Jobs awaiting
    an ack are always due: checking one is two indexed reads, and a tick nudged by an ack must see it at once."""
    extra, ids = _skipping(skip)
    due = rows(conn, f"SELECT trigger_id FROM trigger_jobs WHERE {_DUE}{extra} ORDER BY next_attempt_at LIMIT ?",
               (workspace_id, now, now, *ids, limit))
    claimed = []
    for row in due:
        conn.execute("UPDATE trigger_jobs SET claim_token = ?, lease_until = ? WHERE trigger_id = ?",
                     (token, now + lease_ms, row["trigger_id"]))
        claimed.append(get_job(conn, row["trigger_id"]))
    return [job for job in claimed if job is not None]


def update_claimed(conn: apsw.Connection, trigger_id: str, token: str, changes: dict[str, Any]) -> bool:
    """Apply changes to a job only if `token` still holds its claim (a stale worker's late result is refused)."""
    columns = ", ".join(f"{name} = :{name}" for name in changes)
    conn.execute(f"UPDATE trigger_jobs SET {columns}, claim_token = NULL, lease_until = NULL"
                 " WHERE trigger_id = :trigger_id AND claim_token = :token",
                 {**changes, "trigger_id": trigger_id, "token": token})
    return conn.changes() == 1


def update_job(conn: apsw.Connection, trigger_id: str, changes: dict[str, Any]) -> None:
    """Apply changes to a job regardless of claims (operator retry)."""
    columns = ", ".join(f"{name} = :{name}" for name in changes)
    conn.execute(f"UPDATE trigger_jobs SET {columns} WHERE trigger_id = :trigger_id",
                 {**changes, "trigger_id": trigger_id})


def insert_attempt(conn: apsw.Connection, attempt: dict[str, Any]) -> None:
    """Record one attempt of a job."""
    conn.execute("INSERT INTO trigger_attempts (trigger_id, thread_id, target_agent_id, stage, outcome, reason_code,"
                 " detail, started_at, finished_at) VALUES (:trigger_id, :thread_id, :target_agent_id, :stage,"
                 " :outcome, :reason_code, :detail, :started_at, :finished_at)", attempt)


def attempts(conn: apsw.Connection, trigger_id: str) -> list[dict[str, Any]]:
    """Every attempt of a job, oldest first."""
    return rows(conn, "SELECT * FROM trigger_attempts WHERE trigger_id = ? ORDER BY attempt_id", (trigger_id,))


# What the storm guard counts: attempts that reached the target (typed into its pane, or a resume/spawn command
# run). Outcome rows of the same attempt (`delivered` on ack, `retry`/`fallback` on timeout) and deferrals are not
# attempts: counting them made one acknowledged delivery use two slots.
_COUNTED = "(outcome = 'typed' OR stage IN ('resume', 'spawn') AND outcome IN ('resumed', 'spawned', 'failed'))"


def recent_attempt_count(conn: apsw.Connection, thread_id: str, agent_id: str, since: int) -> int:
    """Delivery attempts at a (thread, target) since a time (the storm guard's window)."""
    return scalar(conn, "SELECT COUNT(*) FROM trigger_attempts WHERE thread_id = ? AND target_agent_id = ?"
                        f" AND started_at >= ? AND {_COUNTED}", (thread_id, agent_id, since)) or 0


def oldest_attempt_since(conn: apsw.Connection, thread_id: str, agent_id: str, since: int) -> int | None:
    """The earliest counted attempt in the storm window (to know when a slot frees)."""
    return scalar(conn, "SELECT MIN(started_at) FROM trigger_attempts WHERE thread_id = ? AND target_agent_id = ?"
                        f" AND started_at >= ? AND {_COUNTED}", (thread_id, agent_id, since))


def list_jobs(conn: apsw.Connection, workspace_id: str, *, dead: bool = False, thread_id: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
    """Newest jobs first; `dead` keeps only failed ones (the dead letters)."""
    where, params = ["workspace_id = ?"], [workspace_id]
    if dead:
        where.append("status = 'failed'")
    if thread_id is not None:
        where.append("thread_id = ?")
        params.append(thread_id)
    return rows(conn, f"SELECT * FROM trigger_jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC,"
                      " trigger_id DESC LIMIT ?", (*params, limit))


def count_by_status(conn: apsw.Connection, workspace_id: str) -> dict[str, int]:
    """Jobs per status (for the `bridge_trigger_jobs` gauge)."""
    return {r["status"]: r["n"] for r in rows(
        conn, "SELECT status, COUNT(*) AS n FROM trigger_jobs WHERE workspace_id = ? GROUP BY status",
        (workspace_id,))}


def add_wake_mark(conn: apsw.Connection, thread_id: str, agent_id: str, seq: int, trigger_id: str, now: int) -> bool:
    """Remember that (thread, agent, seq) was woken; False when it already was (dedup across restarts)."""
    conn.execute("INSERT OR IGNORE INTO wake_marks (thread_id, agent_id, seq, trigger_id, created_at)"
                 " VALUES (?, ?, ?, ?, ?)", (thread_id, agent_id, seq, trigger_id, now))
    return conn.changes() == 1


def wake_candidates(conn: apsw.Connection, workspace_id: str, now: int) -> list[dict[str, Any]]:
    """(thread, agent, newest addressed unread seq) for registered agents whose session is not active."""
    return rows(conn, """
        SELECT u.thread_id, u.agent_id, u.seq FROM (
            SELECT p.thread_id, p.agent_id, MAX(m.seq) AS seq
            FROM participants p
            JOIN threads t ON t.thread_id = p.thread_id AND t.workspace_id = :ws AND t.status != 'closed'
            JOIN sessions s ON s.workspace_id = :ws AND s.agent_id = p.agent_id AND s.status != 'active'
            LEFT JOIN read_cursors c ON c.thread_id = p.thread_id AND c.agent_id = p.agent_id
            JOIN messages m ON m.thread_id = p.thread_id AND m.seq > COALESCE(c.last_read_seq, 0)
                 AND m.sender_agent_id != p.agent_id
                 AND (m.to_agents IS NULL AND m.to_role IS NULL
                      OR EXISTS (SELECT 1 FROM json_each(m.to_agents) j WHERE j.value = p.agent_id)
                      OR m.to_role = p.thread_role)
            WHERE t.latest_seq > COALESCE(c.last_read_seq, 0)
            GROUP BY p.thread_id, p.agent_id
        ) u
        WHERE NOT EXISTS (SELECT 1 FROM wake_marks w WHERE w.thread_id = u.thread_id AND w.agent_id = u.agent_id
                          AND w.seq = u.seq)
    """, {"ws": workspace_id})


def record_runtime_failure(conn: apsw.Connection, workspace_id: str, agent_id: str, kind: str, now: int) -> None:
    """Count a failed resume/spawn of an agent's runtime (crash-loop detection)."""
    conn.execute("INSERT INTO runtime_failures (workspace_id, agent_id, kind, occurred_at) VALUES (?, ?, ?, ?)",
                 (workspace_id, agent_id, kind, now))


def runtime_failures_since(conn: apsw.Connection, workspace_id: str, agent_id: str, since: int) -> int:
    """Runtime failures of an agent since a time."""
    return scalar(conn, "SELECT COUNT(*) FROM runtime_failures WHERE workspace_id = ? AND agent_id = ?"
                        " AND occurred_at >= ?", (workspace_id, agent_id, since)) or 0


def next_due_at(conn: apsw.Connection, workspace_id: str) -> int | None:
    """The earliest next_attempt_at of an unfinished job, or None."""
    return scalar(conn, "SELECT MIN(next_attempt_at) FROM trigger_jobs WHERE workspace_id = ? AND status IN"
                        " ('queued', 'resume', 'spawn', 'awaiting_ack')", (workspace_id,))


def unfinished_job(conn: apsw.Connection, thread_id: str, agent_id: str) -> str | None:
    """An unfinished job already waking this agent for this thread, or None."""
    return scalar(conn, "SELECT trigger_id FROM trigger_jobs WHERE thread_id = ? AND target_agent_id = ? AND status"
                        " IN ('queued', 'resume', 'spawn', 'awaiting_ack') LIMIT 1", (thread_id, agent_id))


def extend_lease(conn: apsw.Connection, trigger_id: str, token: str, until: int) -> bool:
    """Push a claimed job's lease further; False when `token` no longer holds the claim."""
    conn.execute("UPDATE trigger_jobs SET lease_until = ? WHERE trigger_id = ? AND claim_token = ?",
                 (until, trigger_id, token))
    return conn.changes() == 1
