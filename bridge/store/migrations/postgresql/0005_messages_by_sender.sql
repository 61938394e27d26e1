-- PostgreSQL translation of ../0005_messages_by_sender.sql.
-- An agent's own messages in a thread, by seq: unread counts are "every seq after the cursor (seqs are gapless)
-- minus the agent's own", an index range over its own recent messages instead of a scan of the unread history.

CREATE INDEX messages_by_sender ON messages (thread_id, sender_agent_id, seq);
