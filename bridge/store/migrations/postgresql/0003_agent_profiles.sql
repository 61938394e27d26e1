-- PostgreSQL translation of ../0003_agent_profiles.sql.
-- Real agent runtimes: each registry entry may carry its runtime profile (the agent's own environment and argv
-- templates, as JSON), and a trigger job remembers which stage waits for the agent's acknowledgement.

ALTER TABLE sessions ADD COLUMN profile TEXT;
ALTER TABLE trigger_jobs ADD COLUMN ack_stage TEXT;
