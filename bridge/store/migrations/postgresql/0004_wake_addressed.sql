-- PostgreSQL translation of ../0004_wake_addressed.sql, plus the PostgreSQL-only `messages.commit_xid`.
-- Incremental automatic wake: for each thread, addressing (everyone, one agent, one role) and sender, the newest seq
-- of a message so addressed. The worker folds in messages past `wake_folded.last_rowid` (a bounded batch per write),
-- so a tick costs what changed, not the unread history. The watermark starts at 0: the first ticks after this
-- migration fold the existing history (the backfill), in the same code path as every later message.
--
-- On PostgreSQL the watermark is a transaction id, not a rowid: ids are not commit-ordered with concurrent writers,
-- but every transaction below a snapshot's xmin has finished. `messages.commit_xid` is the id of the transaction that
-- inserted the message (existing rows get this migration's), and `wake_folded.last_rowid` holds an xid as a number.

ALTER TABLE messages ADD COLUMN commit_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX messages_by_commit_xid ON messages (commit_xid);

CREATE TABLE wake_addressed (
    thread_id        TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('all', 'agent', 'role')),
    addressee        TEXT NOT NULL,
    sender_agent_id  TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    PRIMARY KEY (thread_id, kind, addressee, sender_agent_id)
);

CREATE TABLE wake_folded (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    last_rowid  BIGINT NOT NULL
);
INSERT INTO wake_folded (id, last_rowid) VALUES (1, 0);
