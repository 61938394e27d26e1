-- PostgreSQL translation of ../0007_thread_digests.sql: the same tables, kept by a plpgsql trigger function with the
-- same effect as SQLite's trigger, and the same backfill.
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
--
-- JSON is read as `json` (not `jsonb`), like SQLite reads it: numbers keep their text as written, and an object's
-- duplicate keys all count (json_each) or the first one wins (a path lookup). Malformed JSON raises, as in SQLite.

-- The finding id of a message's metadata as the summary compares it (Python's str() of the JSON value: text as is,
-- numbers as written, true/false as True/False; objects, arrays, null and no finding_id: none). Numbers are finite:
-- request bodies with NaN or Infinity are refused (bridge/domain/jsonparse.py).
CREATE FUNCTION bridge_finding_key(metadata TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE json_typeof(v)
               WHEN 'string' THEN v #>> '{}'
               WHEN 'number' THEN v::text
               WHEN 'boolean' THEN CASE WHEN v::text = 'true' THEN 'True' ELSE 'False' END
           END
    FROM (SELECT (SELECT e.value FROM json_each(CASE WHEN json_typeof(metadata::json) = 'object'
                                                     THEN metadata::json END) WITH ORDINALITY AS e (key, value, n)
                  WHERE e.key = 'finding_id' ORDER BY e.n LIMIT 1) AS v) AS finding;
$$;

-- The text values SQLite's json_each(doc) yields with type 'text': an array's string elements, an object's string
-- values, or the document itself when it is a string.
CREATE FUNCTION bridge_json_texts(doc TEXT) RETURNS SETOF TEXT LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT v #>> '{}' FROM (
        SELECT value AS v FROM json_array_elements(CASE WHEN json_typeof(doc::json) = 'array' THEN doc::json END)
        UNION ALL SELECT value FROM json_each(CASE WHEN json_typeof(doc::json) = 'object' THEN doc::json END)
        UNION ALL SELECT doc::json WHERE json_typeof(doc::json) NOT IN ('array', 'object')
    ) AS item
    WHERE json_typeof(v) = 'string';
$$;

-- The events that open or close findings, with the finding id as the summary compares it.
CREATE VIEW finding_events AS
SELECT message_id, thread_id, seq, event_type, in_reply_to, bridge_finding_key(metadata) AS finding_key
FROM messages
WHERE kind = 'event' AND event_type IN ('finding_reported', 'finding_verified', 'finding_resolved', 'resolved');

CREATE INDEX messages_by_event ON messages (thread_id, event_type, seq) WHERE event_type IS NOT NULL;

CREATE TABLE message_tallies (
    thread_id        TEXT NOT NULL,
    sender_agent_id  TEXT NOT NULL,
    kind             TEXT NOT NULL,
    messages         BIGINT NOT NULL,
    last_at          BIGINT NOT NULL,
    PRIMARY KEY (thread_id, sender_agent_id, kind)
);

CREATE TABLE event_tallies (
    thread_id   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    messages    BIGINT NOT NULL,
    PRIMARY KEY (thread_id, event_type)
);

CREATE TABLE open_findings (
    message_id   TEXT PRIMARY KEY,
    thread_id    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    finding_key  TEXT
);
CREATE INDEX open_findings_by_seq ON open_findings (thread_id, seq);
CREATE INDEX open_findings_by_key ON open_findings (thread_id, finding_key);

CREATE TABLE sender_marks (
    thread_id        TEXT NOT NULL,
    sender_agent_id  TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    ordinal          BIGINT NOT NULL,
    PRIMARY KEY (thread_id, sender_agent_id, seq)
);

CREATE TABLE addressed_marks (
    thread_id        TEXT NOT NULL,
    to_agent         TEXT NOT NULL,  -- '' = any agent
    to_role          TEXT NOT NULL,  -- '' = any role; both '' = a message to everyone (no to, no to_role)
    sender_agent_id  TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    ordinal          BIGINT NOT NULL,
    PRIMARY KEY (thread_id, to_agent, to_role, sender_agent_id, seq)
);

CREATE FUNCTION messages_digests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_tallies AS t (thread_id, sender_agent_id, kind, messages, last_at)
    VALUES (NEW.thread_id, NEW.sender_agent_id, NEW.kind, 1, NEW.created_at)
    ON CONFLICT (thread_id, sender_agent_id, kind)
    DO UPDATE SET messages = t.messages + 1, last_at = GREATEST(t.last_at, excluded.last_at);
    IF NEW.event_type IS NOT NULL THEN
        INSERT INTO event_tallies AS t (thread_id, event_type, messages)
        VALUES (NEW.thread_id, NEW.event_type, 1)
        ON CONFLICT (thread_id, event_type) DO UPDATE SET messages = t.messages + 1;
    END IF;

    IF NEW.kind = 'event' AND NEW.event_type = 'finding_reported' THEN
        INSERT INTO open_findings (thread_id, seq, message_id, finding_key)
        VALUES (NEW.thread_id, NEW.seq, NEW.message_id, bridge_finding_key(NEW.metadata));
    END IF;
    IF NEW.kind = 'event' AND NEW.event_type IN ('finding_verified', 'finding_resolved', 'resolved') THEN
        DELETE FROM open_findings WHERE message_id = NEW.in_reply_to AND thread_id = NEW.thread_id;
        DELETE FROM open_findings
        WHERE thread_id = NEW.thread_id AND finding_key = bridge_finding_key(NEW.metadata);
    END IF;

    INSERT INTO sender_marks (thread_id, sender_agent_id, seq, ordinal)
    VALUES (NEW.thread_id, NEW.sender_agent_id, NEW.seq,
            1 + COALESCE((SELECT m.ordinal FROM sender_marks m WHERE m.thread_id = NEW.thread_id
                          AND m.sender_agent_id = NEW.sender_agent_id ORDER BY m.seq DESC LIMIT 1), 0));

    IF NEW.to_agents IS NULL AND NEW.to_role IS NULL THEN
        INSERT INTO addressed_marks (thread_id, to_agent, to_role, sender_agent_id, seq, ordinal)
        VALUES (NEW.thread_id, '', '', NEW.sender_agent_id, NEW.seq,
                1 + COALESCE((SELECT m.ordinal FROM addressed_marks m WHERE m.thread_id = NEW.thread_id
                              AND m.to_agent = '' AND m.to_role = '' AND m.sender_agent_id = NEW.sender_agent_id
                              ORDER BY m.seq DESC LIMIT 1), 0));
    ELSE
        -- DO NOTHING: an agent named twice in `to` is marked once
        INSERT INTO addressed_marks (thread_id, to_agent, to_role, sender_agent_id, seq, ordinal)
        SELECT NEW.thread_id, a.to_agent, a.to_role, NEW.sender_agent_id, NEW.seq,
               1 + COALESCE((SELECT m.ordinal FROM addressed_marks m WHERE m.thread_id = NEW.thread_id
                             AND m.to_agent = a.to_agent AND m.to_role = a.to_role
                             AND m.sender_agent_id = NEW.sender_agent_id ORDER BY m.seq DESC LIMIT 1), 0)
        FROM (SELECT j AS to_agent, '' AS to_role FROM bridge_json_texts(NEW.to_agents) j
              UNION ALL SELECT '', NEW.to_role WHERE NEW.to_role IS NOT NULL
              UNION ALL SELECT j, NEW.to_role FROM bridge_json_texts(NEW.to_agents) j
                        WHERE NEW.to_role IS NOT NULL) a
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_digests AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION messages_digests();

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

DELETE FROM open_findings o
USING (SELECT thread_id, finding_key, MAX(seq) AS seq FROM finding_events
       WHERE event_type != 'finding_reported' AND finding_key IS NOT NULL GROUP BY thread_id, finding_key) c
WHERE c.thread_id = o.thread_id AND c.finding_key = o.finding_key AND o.seq < c.seq;

INSERT INTO sender_marks (thread_id, sender_agent_id, seq, ordinal)
SELECT thread_id, sender_agent_id, seq, ROW_NUMBER() OVER (PARTITION BY thread_id, sender_agent_id ORDER BY seq)
FROM messages;

INSERT INTO addressed_marks (thread_id, to_agent, to_role, sender_agent_id, seq, ordinal)
SELECT thread_id, to_agent, to_role, sender_agent_id, seq,
       ROW_NUMBER() OVER (PARTITION BY thread_id, to_agent, to_role, sender_agent_id ORDER BY seq)
FROM (SELECT thread_id, seq, sender_agent_id, '' AS to_agent, '' AS to_role FROM messages
      WHERE to_agents IS NULL AND to_role IS NULL
      UNION SELECT m.thread_id, m.seq, m.sender_agent_id, j, '' FROM messages m, bridge_json_texts(m.to_agents) j
      UNION SELECT thread_id, seq, sender_agent_id, '', to_role FROM messages WHERE to_role IS NOT NULL
      UNION SELECT m.thread_id, m.seq, m.sender_agent_id, j, m.to_role FROM messages m, bridge_json_texts(m.to_agents) j
            WHERE m.to_role IS NOT NULL) AS addressed;
