-- What `summarize_thread`, `inbox` and unread counts need, kept up to date as messages are inserted (by one insert
-- trigger, so every insert path keeps them: posts, system messages, the seed), so that none reads the history:
-- message_tallies: per thread, sender and kind, the message count and newest created_at (counts by kind and sender).
-- event_tallies: per thread and event type, the message count (counts by event type).
-- open_findings: `finding_reported` events not (yet) closed by a later closing event (kind `event`, type
--   finding_verified / finding_resolved / resolved) that replies to them or carries the same finding id.
-- sender_marks: each message's seq and its ordinal among its sender's messages in the thread: a sender's messages
--   after a cursor are its newest ordinal minus its ordinal at the cursor, two index lookups whatever the history.
-- addressed_marks: the same per addressing of a message (everyone; one agent; one role; one agent and one role) and
--   sender: the messages so addressed after a cursor are, summed over the thread's few senders, two lookups each.
-- Each table is backfilled from the existing messages below.

-- The events that open or close findings, with the finding id as the summary compares it (Python's str() of the
-- JSON value: text as is, numbers as written, true/false as True/False; objects, arrays and null: none). Numbers
-- are finite: request bodies with NaN or Infinity are refused (bridge/domain/jsonparse.py).
CREATE VIEW finding_events AS
SELECT message_id, thread_id, seq, event_type, in_reply_to,
       CASE json_type(metadata, '$.finding_id')
           WHEN 'text' THEN json_extract(metadata, '$.finding_id')
           WHEN 'integer' THEN metadata -> '$.finding_id'
           WHEN 'real' THEN metadata -> '$.finding_id'
           WHEN 'true' THEN 'True'
           WHEN 'false' THEN 'False'
       END AS finding_key
FROM messages
WHERE kind = 'event' AND event_type IN ('finding_reported', 'finding_verified', 'finding_resolved', 'resolved');

CREATE INDEX messages_by_event ON messages (thread_id, event_type, seq) WHERE event_type IS NOT NULL;

CREATE TABLE message_tallies (
    thread_id        TEXT NOT NULL,
    sender_agent_id  TEXT NOT NULL,
    kind             TEXT NOT NULL,
    messages         INTEGER NOT NULL,
    last_at          INTEGER NOT NULL,
    PRIMARY KEY (thread_id, sender_agent_id, kind)
) WITHOUT ROWID;

CREATE TABLE event_tallies (
    thread_id   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    messages    INTEGER NOT NULL,
    PRIMARY KEY (thread_id, event_type)
) WITHOUT ROWID;

CREATE TABLE open_findings (
    message_id   TEXT PRIMARY KEY,
    thread_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    finding_key  TEXT
) WITHOUT ROWID;
CREATE INDEX open_findings_by_seq ON open_findings (thread_id, seq);
CREATE INDEX open_findings_by_key ON open_findings (thread_id, finding_key);

CREATE TABLE sender_marks (
    thread_id        TEXT NOT NULL,
    sender_agent_id  TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    ordinal          INTEGER NOT NULL,
    PRIMARY KEY (thread_id, sender_agent_id, seq)
) WITHOUT ROWID;

CREATE TABLE addressed_marks (
    thread_id        TEXT NOT NULL,
    to_agent         TEXT NOT NULL,  -- '' = any agent
    to_role          TEXT NOT NULL,  -- '' = any role; both '' = a message to everyone (no to, no to_role)
    sender_agent_id  TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    ordinal          INTEGER NOT NULL,
    PRIMARY KEY (thread_id, to_agent, to_role, sender_agent_id, seq)
) WITHOUT ROWID;

-- One trigger (each trigger costs a frame per insert, even when its WHEN is false); each statement guards itself.
CREATE TRIGGER messages_digests AFTER INSERT ON messages BEGIN
    INSERT INTO message_tallies (thread_id, sender_agent_id, kind, messages, last_at)
    VALUES (NEW.thread_id, NEW.sender_agent_id, NEW.kind, 1, NEW.created_at)
    ON CONFLICT (thread_id, sender_agent_id, kind)
    DO UPDATE SET messages = messages + 1, last_at = MAX(last_at, excluded.last_at);
    INSERT INTO event_tallies (thread_id, event_type, messages)
    SELECT NEW.thread_id, NEW.event_type, 1 WHERE NEW.event_type IS NOT NULL
    ON CONFLICT (thread_id, event_type) DO UPDATE SET messages = messages + 1;

    INSERT INTO open_findings (thread_id, seq, message_id, finding_key)
    SELECT thread_id, seq, message_id, finding_key FROM finding_events
    WHERE NEW.kind = 'event' AND NEW.event_type = 'finding_reported' AND message_id = NEW.message_id;
    DELETE FROM open_findings
    WHERE NEW.kind = 'event' AND NEW.event_type IN ('finding_verified', 'finding_resolved', 'resolved')
      AND message_id = NEW.in_reply_to AND thread_id = NEW.thread_id;
    DELETE FROM open_findings
    WHERE NEW.kind = 'event' AND NEW.event_type IN ('finding_verified', 'finding_resolved', 'resolved')
      AND thread_id = NEW.thread_id
      AND finding_key = (SELECT finding_key FROM finding_events WHERE message_id = NEW.message_id);

    INSERT INTO sender_marks (thread_id, sender_agent_id, seq, ordinal)
    VALUES (NEW.thread_id, NEW.sender_agent_id, NEW.seq,
            1 + COALESCE((SELECT m.ordinal FROM sender_marks m WHERE m.thread_id = NEW.thread_id
                          AND m.sender_agent_id = NEW.sender_agent_id ORDER BY m.seq DESC LIMIT 1), 0));

    INSERT INTO addressed_marks (thread_id, to_agent, to_role, sender_agent_id, seq, ordinal)
    SELECT NEW.thread_id, '', '', NEW.sender_agent_id, NEW.seq,
           1 + COALESCE((SELECT m.ordinal FROM addressed_marks m WHERE m.thread_id = NEW.thread_id
                         AND m.to_agent = '' AND m.to_role = '' AND m.sender_agent_id = NEW.sender_agent_id
                         ORDER BY m.seq DESC LIMIT 1), 0)
    WHERE NEW.to_agents IS NULL AND NEW.to_role IS NULL;
    -- OR IGNORE: an agent named twice in `to` is marked once
    INSERT OR IGNORE INTO addressed_marks (thread_id, to_agent, to_role, sender_agent_id, seq, ordinal)
    SELECT NEW.thread_id, a.to_agent, a.to_role, NEW.sender_agent_id, NEW.seq,
           1 + COALESCE((SELECT m.ordinal FROM addressed_marks m WHERE m.thread_id = NEW.thread_id
                         AND m.to_agent = a.to_agent AND m.to_role = a.to_role
                         AND m.sender_agent_id = NEW.sender_agent_id ORDER BY m.seq DESC LIMIT 1), 0)
    FROM (SELECT j.value AS to_agent, '' AS to_role FROM json_each(NEW.to_agents) j WHERE j.type = 'text'
          UNION ALL SELECT '', NEW.to_role WHERE NEW.to_role IS NOT NULL
          UNION ALL SELECT j.value, NEW.to_role FROM json_each(NEW.to_agents) j
                    WHERE j.type = 'text' AND NEW.to_role IS NOT NULL) a
    WHERE NEW.to_agents IS NOT NULL OR NEW.to_role IS NOT NULL;
END;

-- Backfill.
INSERT INTO message_tallies (thread_id, sender_agent_id, kind, messages, last_at)
SELECT thread_id, sender_agent_id, kind, COUNT(*), MAX(created_at) FROM messages
GROUP BY thread_id, sender_agent_id, kind;

INSERT INTO event_tallies (thread_id, event_type, messages)
SELECT thread_id, event_type, COUNT(*) FROM messages WHERE event_type IS NOT NULL GROUP BY thread_id, event_type;

INSERT INTO open_findings (thread_id, seq, message_id, finding_key)
SELECT thread_id, seq, message_id, finding_key FROM finding_events WHERE event_type = 'finding_reported';

DELETE FROM open_findings WHERE (thread_id, message_id) IN (
    SELECT thread_id, in_reply_to FROM finding_events WHERE event_type != 'finding_reported');

CREATE TEMP TABLE last_closing (
    thread_id    TEXT NOT NULL,
    finding_key  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (thread_id, finding_key)
) WITHOUT ROWID;
INSERT INTO temp.last_closing (thread_id, finding_key, seq)
SELECT thread_id, finding_key, MAX(seq) FROM finding_events
WHERE event_type != 'finding_reported' AND finding_key IS NOT NULL GROUP BY thread_id, finding_key;
DELETE FROM open_findings WHERE seq < (SELECT c.seq FROM temp.last_closing c
                                       WHERE c.thread_id = open_findings.thread_id
                                       AND c.finding_key = open_findings.finding_key);
DROP TABLE temp.last_closing;

INSERT INTO sender_marks (thread_id, sender_agent_id, seq, ordinal)
SELECT thread_id, sender_agent_id, seq, ROW_NUMBER() OVER (PARTITION BY thread_id, sender_agent_id ORDER BY seq)
FROM messages;

INSERT INTO addressed_marks (thread_id, to_agent, to_role, sender_agent_id, seq, ordinal)
SELECT thread_id, to_agent, to_role, sender_agent_id, seq,
       ROW_NUMBER() OVER (PARTITION BY thread_id, to_agent, to_role, sender_agent_id ORDER BY seq)
FROM (SELECT thread_id, seq, sender_agent_id, '' AS to_agent, '' AS to_role FROM messages
      WHERE to_agents IS NULL AND to_role IS NULL
      UNION SELECT m.thread_id, m.seq, m.sender_agent_id, j.value, '' FROM messages m, json_each(m.to_agents) j
            WHERE j.type = 'text'
      UNION SELECT thread_id, seq, sender_agent_id, '', to_role FROM messages WHERE to_role IS NOT NULL
      UNION SELECT m.thread_id, m.seq, m.sender_agent_id, j.value, m.to_role FROM messages m, json_each(m.to_agents) j
            WHERE j.type = 'text' AND m.to_role IS NOT NULL);
