"""Trigger jobs, their attempts, automatic-wake marks and candidates, and runtime failures."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import apsw

from bridge.store.rows import dialect, greatest, one, rows, scalar

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
# A job is for the worker of `host` unless its target's runtime is registered on another host (no runtime, or one
# with no host recorded: any host's worker).
_FOR_HOST = (" AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.workspace_id = trigger_jobs.workspace_id"
             " AND s.agent_id = trigger_jobs.target_agent_id AND s.host_id <> ?)")
# PostgreSQL: concurrent workers skip the jobs another is claiming instead of waiting on their row locks (SQLite's
# one writer already serialises claims).
_LOCK = {"sqlite": "", "postgresql": " FOR UPDATE SKIP LOCKED"}


def _filters(skip: set[str] | None, host: str | None) -> tuple[str, tuple[str, ...]]:
    """The extra conditions on due jobs: not in `skip`, and for `host` (None: any host)."""
    ids = tuple(sorted(skip or ()))
    sql = f" AND trigger_id NOT IN ({', '.join('?' * len(ids))})" if ids else ""
    return (sql, ids) if host is None else (sql + _FOR_HOST, (*ids, host))


def any_due(conn: apsw.Connection, workspace_id: str, now: int, skip: set[str] | None = None,
            *, host: str | None = None) -> bool:
    """True when claim_due would find a job (a read: most ticks have nothing to claim and need no write)."""
    extra, params = _filters(skip, host)
    return scalar(conn, f"SELECT 1 FROM trigger_jobs WHERE {_DUE}{extra} LIMIT 1",
                  (workspace_id, now, now, *params)) is not None


def claim_due(conn: apsw.Connection, workspace_id: str, now: int, lease_ms: int, token: str,
              limit: int, skip: set[str] | None = None, *, host: str | None = None) -> list[dict[str, Any]]:
    """Lease due, unleased (or lease-expired) jobs, except those in `skip` and those for another host than `host`
    (None: any host), to `token`; return them, the earliest due first. Jobs awaiting an ack are always due: checking
    one is two indexed reads, and a tick nudged by an ack must see it at once. The token fences the claim: a worker
    whose lease lapsed and was taken over gets its later `update_claimed`/`extend_lease` refused."""
    extra, params = _filters(skip, host)
    claimed = rows(conn, "UPDATE trigger_jobs SET claim_token = ?, lease_until = ? WHERE trigger_id IN"
                         f" (SELECT trigger_id FROM trigger_jobs WHERE {_DUE}{extra} ORDER BY next_attempt_at"
                         f" LIMIT ?{_LOCK[dialect(conn)]}) RETURNING *",
                   (token, now + lease_ms, workspace_id, now, now, *params, limit))
    return sorted(claimed, key=lambda job: (job["next_attempt_at"], job["trigger_id"]))


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
    conn.execute("INSERT INTO wake_marks (thread_id, agent_id, seq, trigger_id, created_at) VALUES (?, ?, ?, ?, ?)"
                 " ON CONFLICT DO NOTHING", (thread_id, agent_id, seq, trigger_id, now))
    return conn.changes() == 1


# How a message addresses a participant, as rows of `wake_addressed`: everyone (no `to_agents`, no `to_role`), each
# agent in `to_agents`, and `to_role`. A participant is addressed by a row of its thread that it did not send and
# whose kind is 'all', or 'agent' naming it, or 'role' naming its current thread role. Malformed `to_agents` JSON
# (the API never stores it) addresses no agent rather than stopping every later fold.
#
# Which messages are new: on SQLite, messages are never deleted and one writer commits at a time, so rowids grow in
# commit order; `wake_folded.last_rowid` is the last folded rowid and a batch is the rowids (after, upto]. On
# PostgreSQL, concurrent transactions commit out of id order, so each message carries its transaction id
# (`commit_xid`) and the watermark is a transaction id: everything below it is folded. A batch ends below the
# snapshot's xmin, where every transaction has finished, so no message can still appear behind the watermark.
_BATCH = {"sqlite": "rowid > :after AND rowid <= :upto",
          "postgresql": "commit_xid >= CAST(:after AS text)::xid8 AND commit_xid < CAST(:upto AS text)::xid8"}
_AGENTS = {"sqlite": "json_each(CASE WHEN json_valid(b.to_agents) THEN b.to_agents END) j",
           "postgresql": "json_array_elements_text(CASE WHEN json_typeof(b.to_agents::json) = 'array'"
                         " THEN b.to_agents::json END) j(value)"}
_FOLD = """
    WITH batch AS (SELECT thread_id, seq, sender_agent_id, to_agents, to_role FROM messages WHERE {batch})
    INSERT INTO wake_addressed (thread_id, kind, addressee, sender_agent_id, seq)
    SELECT thread_id, kind, addressee, sender_agent_id, MAX(seq) FROM (
        SELECT thread_id, 'all' AS kind, '' AS addressee, sender_agent_id, seq FROM batch
        WHERE to_agents IS NULL AND to_role IS NULL
        UNION ALL
        SELECT b.thread_id, 'agent', j.value, b.sender_agent_id, b.seq FROM batch b, {agents} WHERE j.value IS NOT NULL
        UNION ALL
        SELECT thread_id, 'role', to_role, sender_agent_id, seq FROM batch WHERE to_role IS NOT NULL
    ) a WHERE true GROUP BY thread_id, kind, addressee, sender_agent_id
    ON CONFLICT (thread_id, kind, addressee, sender_agent_id) DO UPDATE
    SET seq = {greatest}(wake_addressed.seq, excluded.seq)
"""
_UNFOLDED = {
    "sqlite": "SELECT (SELECT MAX(rowid) FROM messages) > last_rowid FROM wake_folded",
    "postgresql": "SELECT EXISTS (SELECT 1 FROM messages, wake_folded WHERE commit_xid >= last_rowid::text::xid8"
                  " AND commit_xid < pg_snapshot_xmin(pg_current_snapshot()))",
}
_UPTO = {  # the end of the next batch of at most `limit` messages past the watermark, or NULL when there is none
    "sqlite": "SELECT MAX(rowid) FROM (SELECT rowid FROM messages WHERE rowid > :after ORDER BY rowid LIMIT :limit)",
    "postgresql": """SELECT CASE WHEN count(*) = 0 THEN NULL WHEN count(*) < :limit
                                 THEN pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                                 ELSE max(commit_xid::text::bigint) + 1 END
                     FROM (SELECT commit_xid FROM messages WHERE commit_xid >= CAST(:after AS text)::xid8
                           AND commit_xid < pg_snapshot_xmin(pg_current_snapshot())
                           ORDER BY commit_xid LIMIT :limit) b""",
}


def has_unfolded(conn: apsw.Connection) -> bool:
    """True when messages exist past the wake watermark (a read: most ticks have nothing to fold and need no write)."""
    return bool(scalar(conn, _UNFOLDED[dialect(conn)]))


def fold_addressed(conn: apsw.Connection, limit: int) -> set[str]:
    """Fold the next `limit` messages past the watermark into `wake_addressed` and move the watermark past them; the
    threads they belong to. One write transaction and idempotent (MAX) upserts: workers sharing a database may each
    run it."""
    sql = dialect(conn)
    after = scalar(conn, "SELECT last_rowid FROM wake_folded")
    upto = scalar(conn, _UPTO[sql], {"after": after, "limit": limit})
    if upto is None:
        return set()
    batch = {"after": after, "upto": upto}
    conn.execute(_FOLD.format(batch=_BATCH[sql], agents=_AGENTS[sql], greatest=greatest(conn)), batch)
    conn.execute("UPDATE wake_folded SET last_rowid = ?", (upto,))
    return {row[0] for row in conn.execute(f"SELECT DISTINCT thread_id FROM messages WHERE {_BATCH[sql]}", batch)}


def session_states(conn: apsw.Connection, workspace_id: str) -> dict[str, str]:
    """Each registered agent's session status (what makes an agent wakeable or not)."""
    return {row[0]: row[1] for row in conn.execute("SELECT agent_id, status FROM sessions WHERE workspace_id = ?",
                                                  (workspace_id,))}


def wake_candidates(conn: apsw.Connection, workspace_id: str, *, threads: Collection[str] | None = None,
                    agents: Collection[str] | None = None) -> list[dict[str, Any]]:
    """(thread, agent, newest addressed unread seq) for registered agents whose session is not active, not yet marked;
    only in `threads` and only for `agents` when given (what changed since the last look).

    Reads the folded `wake_addressed` (call `fold_addressed` first), never the messages: the newest addressed seq
    beyond the cursor is the newest addressed seq whenever that is beyond the cursor."""
    values = {"sqlite": "SELECT value FROM json_each(:{})",
              "postgresql": "SELECT jsonb_array_elements_text(CAST(:{} AS jsonb))"}[dialect(conn)]
    only = ("" if threads is None else f" AND p.thread_id IN ({values.format('threads')})") + (
        "" if agents is None else f" AND p.agent_id IN ({values.format('agents')})")
    params = {"ws": workspace_id, "threads": json.dumps(sorted(threads or ())),
              "agents": json.dumps(sorted(agents or ()))}
    return rows(conn, """
        SELECT u.thread_id, u.agent_id, u.seq FROM (
            SELECT p.thread_id, p.agent_id, MAX(a.seq) AS seq
            FROM participants p
            JOIN threads t ON t.thread_id = p.thread_id AND t.workspace_id = :ws AND t.status != 'closed'
            JOIN sessions s ON s.workspace_id = :ws AND s.agent_id = p.agent_id AND s.status != 'active'
            JOIN wake_addressed a ON a.thread_id = p.thread_id AND a.sender_agent_id != p.agent_id
                 AND (a.kind = 'all' OR a.kind = 'agent' AND a.addressee = p.agent_id
                      OR a.kind = 'role' AND a.addressee = p.thread_role)
            WHERE true""" + only + """
            GROUP BY p.thread_id, p.agent_id
        ) u
        LEFT JOIN read_cursors c ON c.thread_id = u.thread_id AND c.agent_id = u.agent_id
        WHERE u.seq > COALESCE(c.last_read_seq, 0)
          AND NOT EXISTS (SELECT 1 FROM wake_marks w WHERE w.thread_id = u.thread_id AND w.agent_id = u.agent_id
                          AND w.seq = u.seq)
        ORDER BY u.thread_id, u.agent_id
    """, params)


def record_runtime_failure(conn: apsw.Connection, workspace_id: str, agent_id: str, kind: str, now: int) -> None:
    """Count a failed resume/spawn of an agent's runtime (crash-loop detection)."""
    conn.execute("INSERT INTO runtime_failures (workspace_id, agent_id, kind, occurred_at) VALUES (?, ?, ?, ?)",
                 (workspace_id, agent_id, kind, now))


def runtime_failures_since(conn: apsw.Connection, workspace_id: str, agent_id: str, since: int) -> int:
    """Runtime failures of an agent since a time."""
    return scalar(conn, "SELECT COUNT(*) FROM runtime_failures WHERE workspace_id = ? AND agent_id = ?"
                        " AND occurred_at >= ?", (workspace_id, agent_id, since)) or 0


def next_due_at(conn: apsw.Connection, workspace_id: str, *, host: str | None = None) -> int | None:
    """The earliest next_attempt_at of an unfinished job (for `host`'s worker when given), or None."""
    extra, params = _filters(None, host)
    return scalar(conn, "SELECT MIN(next_attempt_at) FROM trigger_jobs WHERE workspace_id = ? AND status IN"
                        f" ('queued', 'resume', 'spawn', 'awaiting_ack'){extra}", (workspace_id, *params))


def unfinished_job(conn: apsw.Connection, thread_id: str, agent_id: str) -> str | None:
    """An unfinished job already waking this agent for this thread, or None."""
    return scalar(conn, "SELECT trigger_id FROM trigger_jobs WHERE thread_id = ? AND target_agent_id = ? AND status"
                        " IN ('queued', 'resume', 'spawn', 'awaiting_ack') LIMIT 1", (thread_id, agent_id))


def extend_lease(conn: apsw.Connection, trigger_id: str, token: str, until: int) -> bool:
    """Push a claimed job's lease further; False when `token` no longer holds the claim."""
    conn.execute("UPDATE trigger_jobs SET lease_until = ? WHERE trigger_id = ? AND claim_token = ?",
                 (until, trigger_id, token))
    return conn.changes() == 1
