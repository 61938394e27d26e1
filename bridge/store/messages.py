"""Messages, read cursors and loop-guard finding counters."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.store.rows import Where, dialect, dumps, greatest, one, rows, scalar

_MESSAGE_COLUMNS = ("message_id, thread_id, seq, schema_version, kind, event_type, body, metadata, sender_agent_id,"
                    " sender_session_id, sender_role, in_reply_to, to_agents, to_role, created_at")


def next_seq(conn: apsw.Connection, thread_id: str, now: int, *, no_progress: int | None = None) -> int:
    """Allocate the thread's next seq (previous max + 1) inside the write transaction; with `no_progress`, store the
    loop guard's consecutive no-progress counter in the same statement."""
    return conn.execute("UPDATE threads SET latest_seq = latest_seq + 1, updated_at = ?,"
                        " no_progress = COALESCE(?, no_progress) WHERE thread_id = ? RETURNING latest_seq",
                        (now, no_progress, thread_id)).fetchall()[0][0]


def insert_message(conn: apsw.Connection, m: dict[str, Any]) -> None:
    """Insert a message row (seq already allocated)."""
    conn.execute(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}, idempotency_key, payload_hash) VALUES (:message_id, :thread_id,"
        " :seq, :schema_version, :kind, :event_type, :body, :metadata, :sender_agent_id, :sender_session_id,"
        " :sender_role, :in_reply_to, :to_agents, :to_role, :created_at, :idempotency_key, :payload_hash)",
        {**m, "metadata": dumps(m["metadata"]), "to_agents": None if m["to_agents"] is None else dumps(m["to_agents"])},
    )


def find_by_idempotency_key(conn: apsw.Connection, thread_id: str, sender: str, key: str) -> dict[str, Any] | None:
    """The message a sender posted with this key on this thread, or None."""
    return one(conn, f"SELECT {_MESSAGE_COLUMNS}, payload_hash FROM messages"
                     " WHERE thread_id = ? AND sender_agent_id = ? AND idempotency_key = ?", (thread_id, sender, key))


def get_message(conn: apsw.Connection, message_id: str) -> dict[str, Any] | None:
    """A message row by id, or None."""
    return one(conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ?", (message_id,))


def read_range(conn: apsw.Connection, thread_id: str, *, since_seq: int, limit: int, kinds: list[str] | None,
               from_agent_id: str | None, event_type: str | None) -> list[dict[str, Any]]:
    """Messages with seq > since_seq in ascending order, filtered; at most `limit` rows."""
    where = Where("thread_id = ? AND seq > ?", thread_id, since_seq)
    if kinds:
        where.add(f"kind IN ({','.join('?' * len(kinds))})", *kinds)
    where.equal("sender_agent_id", from_agent_id).equal("event_type", event_type)
    return rows(conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {where} ORDER BY seq LIMIT ?",
                (*where.params, limit))


def latest_event(conn: apsw.Connection, thread_id: str, event_type: str) -> dict[str, Any] | None:
    """The newest event (kind `event`) of a type on a thread, or None."""
    return one(conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND kind = 'event'"
                     " AND event_type = ? ORDER BY seq DESC LIMIT 1", (thread_id, event_type))


def latest_messages(conn: apsw.Connection, thread_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` messages of a thread, in ascending seq order."""
    found = rows(conn, f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY seq DESC LIMIT ?",
                 (thread_id, limit))
    found.reverse()
    return found


def counts(conn: apsw.Connection, thread_id: str) -> dict[str, Any]:
    """Message counts of a thread by kind and by event type, and per sender (count, last activity), read from the
    tallies the insert triggers keep (migration 7): the cost is the number of senders, kinds and event types."""
    by_kind = {r["kind"]: r["n"] for r in rows(
        conn, "SELECT kind, SUM(messages) AS n FROM message_tallies WHERE thread_id = ? GROUP BY kind ORDER BY kind",
        (thread_id,))}
    by_event = {r["event_type"]: r["n"] for r in rows(
        conn, "SELECT event_type, messages AS n FROM event_tallies WHERE thread_id = ? ORDER BY event_type",
        (thread_id,))}
    by_sender = {r["sender_agent_id"]: r for r in rows(
        conn, "SELECT sender_agent_id, SUM(messages) AS n, MAX(last_at) AS last_at FROM message_tallies"
              " WHERE thread_id = ? GROUP BY sender_agent_id", (thread_id,))}
    return {"by_kind": by_kind, "by_event_type": by_event, "by_sender": by_sender}


def open_findings(conn: apsw.Connection, thread_id: str) -> list[dict[str, Any]]:
    """The `finding_reported` events of a thread that no closing event has closed yet, in ascending seq order
    (kept by the insert triggers of migration 7): message_id, seq, sender_agent_id, body and metadata."""
    return rows(conn, "SELECT m.message_id, m.seq, m.sender_agent_id, m.body, m.metadata FROM open_findings o"
                      " JOIN messages m ON m.message_id = o.message_id WHERE o.thread_id = ? ORDER BY o.seq",
                (thread_id,))


def get_cursor(conn: apsw.Connection, thread_id: str, agent_id: str) -> int:
    """The agent's last read seq on the thread (0 when it never acknowledged)."""
    return scalar(conn, "SELECT last_read_seq FROM read_cursors WHERE thread_id = ? AND agent_id = ?",
                  (thread_id, agent_id)) or 0


def set_cursor(conn: apsw.Connection, thread_id: str, agent_id: str, seq: int, now: int) -> None:
    """Store the agent's read cursor (callers enforce monotonicity)."""
    conn.execute("INSERT INTO read_cursors (thread_id, agent_id, last_read_seq, updated_at) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (thread_id, agent_id) DO UPDATE SET last_read_seq = excluded.last_read_seq,"
                 " updated_at = excluded.updated_at", (thread_id, agent_id, seq, now))


def _after_cursor(table: str, ordinal: str, match: str, cursor: str) -> str:
    """SQL: how many of the thread's rows of a marks table matching `match` (numbered in seq order by `ordinal`)
    have a seq after the agent's cursor (the SQL `cursor`): the newest ordinal minus the ordinal at the cursor, two
    index lookups."""
    lookup = f"SELECT x.{ordinal} FROM {table} x WHERE x.thread_id = t.thread_id AND {match}"
    return (f"(COALESCE(({lookup} ORDER BY x.seq DESC LIMIT 1), 0)"
            f" - COALESCE(({lookup} AND x.seq <= {cursor} ORDER BY x.seq DESC LIMIT 1), 0))")


def _unread_count(cursor: str, max_of: str) -> str:
    """SQL: messages after the agent's cursor that it did not send itself: every seq after the cursor (seqs are
    gapless, so latest_seq - cursor of them) minus its own (sender_marks, migration 7)."""
    own = _after_cursor("sender_marks", "ordinal", "x.sender_agent_id = :agent", cursor)
    return f"{max_of}(0, t.latest_seq - {cursor} - {own})"


def _addressed_by_others(to_agent: str, to_role: str, cursor: str) -> str:
    """SQL: messages after the cursor with this addressing (addressed_marks) from each sender of the thread (its
    tallies) but the agent."""
    match = f"x.to_agent = {to_agent} AND x.to_role = {to_role} AND x.sender_agent_id = s.sender_agent_id"
    return (f"(SELECT COALESCE(SUM({_after_cursor('addressed_marks', 'ordinal', match, cursor)}), 0) FROM"
            " (SELECT DISTINCT sender_agent_id FROM message_tallies WHERE thread_id = t.thread_id"
            " AND sender_agent_id != :agent) s)")


def _addressed_unread_count(cursor: str, role: str) -> str:
    """SQL: unread messages addressed to the agent: to everyone, or to the agent, or to its thread role (`role`),
    counting those to both the agent and its role once."""
    return " + ".join((_addressed_by_others("''", "''", cursor), _addressed_by_others(":agent", "''", cursor),
                       _addressed_by_others("''", role, cursor))) + " - " + _addressed_by_others(":agent", role, cursor)


def unread_count(conn: apsw.Connection, thread_id: str, agent_id: str) -> int:
    """Messages after the agent's cursor that it did not send itself."""
    count = _unread_count("COALESCE(c.last_read_seq, 0)", greatest(conn))
    return scalar(conn, f"SELECT {count} FROM threads t LEFT JOIN read_cursors c ON c.thread_id ="
                        " t.thread_id AND c.agent_id = :agent WHERE t.thread_id = :thread",
                  {"agent": agent_id, "thread": thread_id}) or 0


FEW_THREADS = 200  # an agent in fewer threads than this: its inbox starts from its memberships


def inbox(conn: apsw.Connection, workspace_id: str, agent_id: str, limit: int) -> list[dict[str, Any]]:
    """Threads of the agent with unread messages, newest activity first, with unread and addressed-unread counts.

    Rows are stepped one at a time and counted only until `limit` threads have unread messages. An agent in many
    threads reads them in the order of the index `threads_by_update` (backwards, so nothing is sorted): it pays for
    about one page, not for every thread. An agent in few threads (under FEW_THREADS) starts from its own
    memberships (`CROSS JOIN` keeps that order) and sorts those few, instead of walking the workspace's threads."""
    if not limit:
        return []
    few = scalar(conn, "SELECT COUNT(*) FROM (SELECT 1 FROM participants WHERE agent_id = ? LIMIT ?) m",
                 (agent_id, FEW_THREADS)) < FEW_THREADS
    keep_order = few and dialect(conn) == "sqlite"  # PostgreSQL's planner needs no hint (and has no CROSS JOIN ON)
    cursor = conn.execute(f"""
        SELECT t.thread_id, t.title, t.status, t.latest_seq, t.updated_at,
               COALESCE(c.last_read_seq, 0) AS last_read_seq,
               {_unread_count("COALESCE(c.last_read_seq, 0)", greatest(conn))} AS unread_count,
               {_addressed_unread_count("COALESCE(c.last_read_seq, 0)", "p.thread_role")} AS addressed_to_me
        FROM participants p
        {"CROSS JOIN" if keep_order else "JOIN"} threads t ON t.thread_id = p.thread_id
        LEFT JOIN read_cursors c ON c.thread_id = p.thread_id AND c.agent_id = p.agent_id
        WHERE p.agent_id = :agent AND t.workspace_id = :ws AND t.latest_seq > COALESCE(c.last_read_seq, 0)
        ORDER BY t.updated_at DESC, t.thread_id DESC
    """, {"agent": agent_id, "ws": workspace_id})
    try:
        names = [d[0] for d in cursor.getdescription()]
    except apsw.ExecutionCompleteError:  # no thread has anything past the cursor
        return []
    found: list[dict[str, Any]] = []
    for values in cursor:  # stepped lazily: counts of threads past the page are never computed
        row = dict(zip(names, values, strict=True))
        if row["unread_count"] > 0:  # the limit counts threads with unread messages, not only the agent's own
            found.append(row)
            if len(found) == limit:
                break
    cursor.close()
    return found


def bump_finding(conn: apsw.Connection, thread_id: str, finding_key: str) -> int:
    """Count one more report of a finding on a thread; return the new count."""
    return conn.execute("INSERT INTO finding_reports (thread_id, finding_key, reports) VALUES (?, ?, 1)"
                        " ON CONFLICT (thread_id, finding_key) DO UPDATE SET reports = finding_reports.reports + 1"
                        " RETURNING reports", (thread_id, finding_key)).fetchall()[0][0]


def created_at(conn: apsw.Connection, thread_id: str, seq: int) -> int | None:
    """When the message with this seq was committed, or None."""
    return scalar(conn, "SELECT created_at FROM messages WHERE thread_id = ? AND seq = ?", (thread_id, seq))
