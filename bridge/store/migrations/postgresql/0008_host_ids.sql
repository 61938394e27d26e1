-- PostgreSQL translation of ../0008_host_ids.sql.
-- Workers on many hosts: each runtime registration records the host it runs on (the `--host-id` / BRIDGE_HOST_ID
-- of the process that registered it). A worker delivers only to runtimes on its own host or with no host recorded
-- (NULL: any host, as every registration made before this migration).

ALTER TABLE sessions ADD COLUMN host_id TEXT;
