-- Threads, participants, messages, cursors, escalations, loop-guard counters, sessions, revocations,
-- control flags and the append-only audit trail. Times are integer milliseconds since the epoch.

CREATE TABLE threads (
    thread_id        TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL,
    title            TEXT NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('conversation', 'workflow', 'incident')),
    status           TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'resolved', 'closed')),
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_by       TEXT NOT NULL,
    latest_seq       INTEGER NOT NULL DEFAULT 0,
    no_progress      INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    request_hash     TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (workspace_id, created_by, idempotency_key)
);
CREATE INDEX threads_by_update ON threads (workspace_id, updated_at, thread_id);

CREATE TABLE participants (
    thread_id    TEXT NOT NULL REFERENCES threads (thread_id),
    agent_id     TEXT NOT NULL,
    thread_role  TEXT NOT NULL,
    added_at     INTEGER NOT NULL,
    PRIMARY KEY (thread_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX participants_by_agent ON participants (agent_id, thread_id);

CREATE TABLE messages (
    message_id        TEXT PRIMARY KEY,
    thread_id         TEXT NOT NULL REFERENCES threads (thread_id),
    seq               INTEGER NOT NULL,
    schema_version    INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('chat', 'event', 'system')),
    event_type        TEXT,
    body              TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    sender_agent_id   TEXT NOT NULL,
    sender_session_id TEXT NOT NULL,
    sender_role       TEXT NOT NULL,
    in_reply_to       TEXT,
    to_agents         TEXT,
    to_role           TEXT,
    idempotency_key   TEXT,
    payload_hash      TEXT,
    created_at        INTEGER NOT NULL,
    UNIQUE (thread_id, seq),
    UNIQUE (thread_id, sender_agent_id, idempotency_key)
);

CREATE TABLE read_cursors (
    thread_id      TEXT NOT NULL REFERENCES threads (thread_id),
    agent_id       TEXT NOT NULL,
    last_read_seq  INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (thread_id, agent_id)
) WITHOUT ROWID;

CREATE TABLE escalations (
    escalation_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id       TEXT NOT NULL REFERENCES threads (thread_id),
    reason          TEXT NOT NULL,
    escalated_by    TEXT NOT NULL,
    owner_agent_id  TEXT,
    opened_at       INTEGER NOT NULL,
    snapshot        TEXT NOT NULL,
    closed_at       INTEGER,
    closed_by       TEXT,
    close_reason    TEXT
);
CREATE UNIQUE INDEX one_open_escalation ON escalations (thread_id) WHERE closed_at IS NULL;

CREATE TABLE finding_reports (
    thread_id    TEXT NOT NULL REFERENCES threads (thread_id),
    finding_key  TEXT NOT NULL,
    reports      INTEGER NOT NULL,
    PRIMARY KEY (thread_id, finding_key)
) WITHOUT ROWID;

CREATE TABLE sessions (
    workspace_id      TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    runtime           TEXT NOT NULL,
    runtime_kind      TEXT NOT NULL,
    status            TEXT NOT NULL,
    resumable         INTEGER NOT NULL,
    management_mode   TEXT NOT NULL,
    tmux_target       TEXT,
    cwd               TEXT,
    paused            INTEGER NOT NULL DEFAULT 0,
    last_heartbeat_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, agent_id)
) WITHOUT ROWID;

CREATE TABLE revocations (
    kind        TEXT NOT NULL CHECK (kind IN ('jti', 'session', 'agent')),
    value       TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL,
    revoked_by  TEXT NOT NULL,
    reason      TEXT,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;

CREATE TABLE control (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit_events (
    audit_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at   INTEGER NOT NULL,
    workspace_id  TEXT NOT NULL,
    actor         TEXT NOT NULL,
    actor_role    TEXT NOT NULL,
    operation     TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    thread_id     TEXT,
    request_id    TEXT,
    reason        TEXT,
    details       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_by_thread ON audit_events (thread_id, audit_id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
