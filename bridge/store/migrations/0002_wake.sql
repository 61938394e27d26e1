-- Wake pipeline: trigger jobs with leases, every attempt, automatic-wake marks, runtime failures.

CREATE TABLE trigger_jobs (
    trigger_id        TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    thread_id         TEXT NOT NULL REFERENCES threads (thread_id),
    target_agent_id   TEXT NOT NULL,
    reason            TEXT NOT NULL,
    prompt            TEXT NOT NULL,
    origin            TEXT NOT NULL CHECK (origin IN ('api', 'auto', 'operator')),
    requested_by      TEXT NOT NULL,
    request_id        TEXT,
    request_hash      TEXT,
    force             INTEGER NOT NULL DEFAULT 0,
    action            TEXT NOT NULL,
    fallback_action   TEXT,
    decision          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'resume', 'spawn', 'awaiting_ack',
                                                     'delivered', 'resumed', 'spawned', 'failed')),
    deliveries        INTEGER NOT NULL DEFAULT 0,
    resume_attempts   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER NOT NULL,
    deferred_since    INTEGER,
    defer_reason      TEXT,
    delivered_at      INTEGER,
    ack_deadline      INTEGER,
    ack_cursor_seq    INTEGER,
    tmux_target       TEXT,
    trigger_seq       INTEGER,
    claim_token       TEXT,
    lease_until       INTEGER,
    result_code       TEXT,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    UNIQUE (workspace_id, requested_by, request_id)
);
CREATE INDEX trigger_jobs_due ON trigger_jobs (status, next_attempt_at);
CREATE INDEX trigger_jobs_target ON trigger_jobs (thread_id, target_agent_id, created_at);

CREATE TABLE trigger_attempts (
    attempt_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_id    TEXT NOT NULL REFERENCES trigger_jobs (trigger_id),
    thread_id     TEXT NOT NULL,
    target_agent_id TEXT NOT NULL,
    stage         TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    reason_code   TEXT,
    detail        TEXT,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER NOT NULL
);
CREATE INDEX trigger_attempts_by_job ON trigger_attempts (trigger_id, attempt_id);
CREATE INDEX trigger_attempts_rate ON trigger_attempts (thread_id, target_agent_id, started_at);

CREATE TABLE wake_marks (
    thread_id   TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    trigger_id  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (thread_id, agent_id, seq)
) WITHOUT ROWID;

CREATE TABLE runtime_failures (
    failure_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    occurred_at   INTEGER NOT NULL
);
CREATE INDEX runtime_failures_by_agent ON runtime_failures (workspace_id, agent_id, occurred_at);
