-- PostgreSQL translation of ../0006_shared_limits.sql.
-- State that several `bridge serve` processes on one database must share instead of keeping in memory.
--
-- write_quota: each agent's write-quota token bucket (tokens left at updated_at, unix ms), read and updated inside the
-- posting transaction, so the quota holds whichever process serves the agent.
-- leases: named leases with a fencing number (bumped on every change of holder), e.g. which process runs the worker.

CREATE TABLE write_quota (
    agent_id    TEXT PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    fencing     BIGINT NOT NULL
);
