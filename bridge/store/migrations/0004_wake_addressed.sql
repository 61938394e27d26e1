-- Incremental automatic wake: for each thread, addressing (everyone, one agent, one role) and sender, the newest seq
-- of a message so addressed. The worker folds in messages past `wake_folded.last_rowid` (a bounded batch per write),
-- so a tick costs what changed, not the unread history. The watermark starts at 0: the first ticks after this
-- migration fold the existing history (the backfill), in the same code path as every later message.

CREATE TABLE wake_addressed (
    thread_id        TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('all', 'agent', 'role')),
    addressee        TEXT NOT NULL,
    sender_agent_id  TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    PRIMARY KEY (thread_id, kind, addressee, sender_agent_id)
) WITHOUT ROWID;

CREATE TABLE wake_folded (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    last_rowid  INTEGER NOT NULL
);
INSERT INTO wake_folded (id, last_rowid) VALUES (1, 0);
