-- The bridge's token signing key, where the database keeps it. Only PostgreSQL does (every server and CLI on every
-- host shares the one database, so they must share its key); on SQLite this table stays EMPTY: the key is the file
-- signing-key.pem (mode 0600) in the data directory, since a SQLite file is copied by backups with default
-- permissions. `name` is the key's role ("local": the key this bridge signs with).

CREATE TABLE signing_keys (
    name TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
