"""The PostgreSQL migrations (`bridge/store/migrations/postgresql/`) against the SQLite ones they translate.

Every expectation is read from a SQLite database migrated the SQLite way: the same tables, columns, keys and indexes,
and the digest triggers of 0007 keeping the same rows for the same inserts (and refusing the same ones).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest

from bridge.store.migrate import migrate, migrations

PG_ONLY_COLUMNS = {"messages": ["commit_xid"]}  # the wake fold's watermark on PostgreSQL (0004)
PG_ONLY_INDEXES = {"messages_by_commit_xid"}
PG_TYPES = {"INTEGER": "bigint", "TEXT": "text", "REAL": "double precision"}  # how each SQLite type is translated

Row = tuple[Any, ...]


def pg_migrations() -> list[tuple[int, str, str]]:
    """The bundled PostgreSQL migrations as (number, name, sql), in order."""
    found = []
    for entry in resources.files("bridge.store").joinpath("migrations/postgresql").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate_pg(conn: psycopg.Connection, first: int = 1, last: int | None = None) -> None:
    """Apply the PostgreSQL migrations numbered `first` to `last` (default: the latest), each in its own transaction."""
    for number, _name, sql in pg_migrations():
        if number >= first and (last is None or number <= last):
            with conn.transaction():
                conn.execute(sql)


def migrate_sqlite(conn: apsw.Connection, upto: int) -> None:
    """Apply the SQLite migrations up to `upto` the way `migrate` does, to stop before the latest."""
    for number, _name, sql in migrations():
        if number <= upto:
            with conn:
                conn.execute(sql)
                conn.execute(f"PRAGMA user_version={number}")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[apsw.Connection]:
    conn = apsw.Connection(str(tmp_path / "bridge.db"))
    yield conn
    conn.close()


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


# --- schema -----------------------------------------------------------------------------------------------------


def sqlite_tables(conn: apsw.Connection, kind: str = "table") -> set[str]:
    return {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'", (kind,))}


def pg_tables(conn: psycopg.Connection, kind: str = "BASE TABLE") -> set[str]:
    return {name for (name,) in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = %s",
        (kind,))}


def sqlite_columns(conn: apsw.Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, PostgreSQL type, not null) per column in order; a primary key column is not null in PostgreSQL."""
    return [(name, PG_TYPES[declared], bool(notnull or pk)) for _cid, name, declared, notnull, _default, pk
            in conn.execute(f"PRAGMA table_info({table})")]


def pg_columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str, bool]]:
    return [(name, data_type, nullable == "NO") for name, data_type, nullable in conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position", (table,))
        if name not in PG_ONLY_COLUMNS.get(table, [])]


def sqlite_checks(conn: apsw.Connection, table: str) -> int:
    (sql,), = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return sql.count("CHECK (")


def pg_checks(conn: psycopg.Connection, table: str) -> int:
    (count,), = conn.execute("SELECT COUNT(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
                             (table,))
    return count


def sqlite_keys(conn: apsw.Connection, table: str) -> tuple[list[str], set[tuple[str, ...]]]:
    """The primary key columns in key order and the column lists of the UNIQUE constraints."""
    primary = [name for _cid, name, *_rest, pk in sorted(conn.execute(f"PRAGMA table_info({table})"),
                                                         key=lambda column: column[5]) if pk]
    uniques = {tuple(name for _seqno, _cid, name in conn.execute(f"PRAGMA index_info({index})"))
               for _seq, index, _unique, origin, _partial in conn.execute(f"PRAGMA index_list({table})")
               if origin == "u"}
    return primary, uniques


def pg_keys(conn: psycopg.Connection, table: str) -> tuple[list[str], set[tuple[str, ...]]]:
    keys: dict[str, list[tuple[str, ...]]] = {"p": [], "u": []}
    for kind, columns in conn.execute(
            "SELECT k.contype, ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS c (attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.attnum ORDER BY c.n)"
            " FROM pg_constraint k WHERE k.conrelid = %s::regclass AND k.contype IN ('p', 'u')", (table,)):
        keys[kind].append(tuple(columns))
    return list(keys["p"][0]) if keys["p"] else [], set(keys["u"])


def sqlite_indexes(conn: apsw.Connection) -> dict[str, Row]:
    """Each explicitly created index: (table, unique, partial, columns)."""
    found = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for _seq, index, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})").fetchall():
            if origin == "c":
                columns = tuple(name for _seqno, _cid, name in conn.execute(f"PRAGMA index_info({index})"))
                found[index] = (table, bool(unique), bool(partial), columns)
    return found


def pg_indexes(conn: psycopg.Connection) -> dict[str, Row]:
    """Each index not backing a constraint: (table, unique, partial, columns)."""
    rows = conn.execute(
        "SELECT c.relname, t.relname, i.indisunique, i.indpred IS NOT NULL,"
        " ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnatts) AS k ORDER BY k)"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)")
    return {name: (table, unique, partial, tuple(columns)) for name, table, unique, partial, columns in rows
            if name not in PG_ONLY_INDEXES}


def test_the_same_migrations_on_both_engines() -> None:
    assert [(number, name) for number, name, _ in pg_migrations()] == \
        [(number, name) for number, name, _ in migrations()]


def test_the_migrated_schemas_match(sqlite_db: apsw.Connection, pg_db: psycopg.Connection) -> None:
    migrate(sqlite_db)
    migrate_pg(pg_db)
    tables = sqlite_tables(sqlite_db)
    assert pg_tables(pg_db) == tables
    assert pg_tables(pg_db, "VIEW") == sqlite_tables(sqlite_db, "view")
    for table in sorted(tables):
        assert pg_columns(pg_db, table) == sqlite_columns(sqlite_db, table), table
        assert pg_keys(pg_db, table) == sqlite_keys(sqlite_db, table), table
        assert pg_checks(pg_db, table) == sqlite_checks(sqlite_db, table), table
        assert contents(pg_run(pg_db), table) == contents(sqlite_run(sqlite_db), table), table  # seeded rows
    assert pg_indexes(pg_db) == sqlite_indexes(sqlite_db)
    assert [name for (name,) in pg_db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'messages'"
        " AND column_default LIKE 'pg_current_xact_id()%'")] == ["commit_xid"]


# --- the digest triggers of 0007 ------------------------------------------------------------------------------------

THREADS = ("t1", "t2")
MESSAGE_COLUMNS = ("message_id", "thread_id", "seq", "kind", "event_type", "metadata", "sender_agent_id",
                   "in_reply_to", "to_agents", "to_role", "created_at")


def message(message_id: str, thread_id: str, seq: int, sender: str, *, kind: str = "chat",
            event_type: str | None = None, metadata: str = "{}", in_reply_to: str | None = None,
            to_agents: str | None = None, to_role: str | None = None, created_at: int | None = None) -> Row:
    return (message_id, thread_id, seq, kind, event_type, metadata, sender, in_reply_to, to_agents, to_role,
            1_000 + seq if created_at is None else created_at)


def finding(message_id: str, thread_id: str, seq: int, sender: str, event_type: str = "finding_reported",
            metadata: str = "{}", in_reply_to: str | None = None) -> Row:
    return message(message_id, thread_id, seq, sender, kind="event", event_type=event_type, metadata=metadata,
                   in_reply_to=in_reply_to)


# Threads t1 and t2: chat, system and events from several senders, addressed to everyone, agents (an array with a
# duplicate and non-text items, a bare string, an object), roles (including ''), both, and malformed JSON; findings
# keyed by text, numbers as written, booleans, duplicate keys, no key, closed by reply, by key, or not at all.
SCRIPT: list[Row] = [
    message("m1", "t1", 1, "alice"),
    message("m2", "t1", 2, "bob", to_agents='["alice"]'),
    finding("m3", "t1", 3, "alice", metadata='{"finding_id": "F-1"}'),
    finding("m4", "t1", 4, "bob", metadata='{"finding_id": 7}'),
    finding("m5", "t1", 5, "carol", metadata='{"finding_id": true}'),
    finding("m6", "t1", 6, "alice", metadata='{"finding_id": 1.50}'),
    finding("m7", "t1", 7, "bob"),
    finding("m8", "t1", 8, "bob", metadata='{"finding_id": "a", "finding_id": "b"}'),
    finding("m9", "t1", 9, "carol", metadata='{"finding_id": 1E5, "other": [1]}'),
    finding("m10", "t1", 10, "carol", metadata='{"finding_id": null}'),
    finding("m11", "t1", 11, "carol", metadata='{"finding_id": ["F-1"]}'),
    message("m12", "t1", 12, "alice", to_agents='["bob", "bob", "carol"]', to_role="reviewer"),
    message("m13", "t1", 13, "carol", to_role="reviewer", created_at=500),
    message("m14", "t1", 14, "alice", to_agents='"dave"'),
    message("m15", "t1", 15, "alice", to_agents='{"x": "erin", "y": 5, "z": "erin"}'),
    message("m16", "t1", 16, "bob", to_agents='[1, null, ["x"], {"a": "b"}, "frank", ""]', to_role=""),
    message("bad-to", "t1", 17, "bob", to_agents='["bob"'),
    finding("bad-metadata", "t1", 17, "bob", metadata="{not json"),
    message("m17", "t1", 17, "alice", to_agents="[]"),
    message("m18", "t1", 18, "alice", to_agents='"\\u00e9ric"', to_role="r\u00f4le"),
    finding("m19", "t1", 19, "bob", "finding_verified", in_reply_to="m3"),
    finding("m20", "t1", 20, "alice", "finding_resolved", metadata='{"finding_id": 7}'),
    finding("m21", "t1", 21, "alice", "resolved", metadata='{"finding_id": "True"}'),
    finding("m22", "t1", 22, "carol", "finding_verified", metadata='{"finding_id": "a"}', in_reply_to="m7"),
    message("m23", "t1", 23, "alice", kind="chat", event_type="resolved", metadata='{"finding_id": "1.50"}'),
    finding("m24", "t1", 24, "bob", "note", metadata='{"finding_id": "1E5"}'),
    message("m25", "t1", 25, "bridge", kind="system"),
    finding("m26", "t2", 1, "alice", metadata='{"finding_id": "F-1"}'),
    message("m27", "t2", 3, "bob", to_role="reviewer"),
    message("m28", "t2", 2, "bob", to_agents='["alice"]'),
    finding("m29", "t2", 4, "bob", "resolved", metadata='{"finding_id": "F-1"}'),
    finding("m30", "t2", 5, "alice", metadata='{"finding_id": "F-1"}'),
    finding("m31", "t2", 6, "bob", "finding_resolved", metadata='{"finding_id": 1.50}'),
    finding("m32", "t2", 7, "bob", "finding_verified", in_reply_to="m9"),
    message("m33", "t2", 8, "alice", to_role=""),
]
INSERT = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}, schema_version, body, sender_session_id, sender_role)"
          f" VALUES ({', '.join('?' for _ in MESSAGE_COLUMNS)}, 1, 'body', 'session', 'member')")


def sqlite_run(conn: apsw.Connection) -> Callable[[str, Sequence[Any]], list[Row]]:
    return lambda sql, params=(): [tuple(row) for row in conn.execute(sql, tuple(params))]


def pg_run(conn: psycopg.Connection) -> Callable[[str, Sequence[Any]], list[Row]]:
    def run(sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = conn.execute(sql.replace("?", "%s"), tuple(params))
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    return run


def add_threads(run: Callable[[str, Sequence[Any]], list[Row]]) -> None:
    for thread_id in THREADS:
        run("INSERT INTO threads (thread_id, workspace_id, title, type, status, created_by, created_at, updated_at)"
            " VALUES (?, 'w', 'title', 'conversation', 'active', 'alice', 1, 1)", (thread_id,))


def insert_refused(run: Callable[[str, Sequence[Any]], list[Row]], row: Row) -> bool:
    """Insert one message in its own transaction; whether the database refused it."""
    try:
        run(INSERT, row)
    except (apsw.Error, psycopg.Error):
        return True
    return False


BEFORE_DIGESTS = 6  # the schema version before 0007 added the digests


def digest_tables(conn: apsw.Connection) -> list[str]:
    """The tables and views migration 0007 adds, read from SQLite: a database at 0006 against one at 0007."""
    with tempfile.TemporaryDirectory(prefix="bridge-schema-") as directory:
        before = apsw.Connection(str(Path(directory) / "at-0006.db"))
        migrate_sqlite(before, BEFORE_DIGESTS)
        added = ((sqlite_tables(conn) | sqlite_tables(conn, "view")) - sqlite_tables(before)
                 - sqlite_tables(before, "view"))
        before.close()
    return sorted(added)


def contents(run: Callable[[str, Sequence[Any]], list[Row]], table: str) -> list[Row]:
    return sorted(run(f"SELECT * FROM {table}", ()), key=repr)


def test_the_digest_triggers_keep_the_same_rows(sqlite_db: apsw.Connection, pg_db: psycopg.Connection) -> None:
    migrate(sqlite_db)
    migrate_pg(pg_db)
    sqlite, pg = sqlite_run(sqlite_db), pg_run(pg_db)
    add_threads(sqlite)
    add_threads(pg)
    refused = []
    for row in SCRIPT:
        outcome = insert_refused(sqlite, row)
        assert insert_refused(pg, row) == outcome, row
        if outcome:
            refused.append(row[0])
        if row[0] == "m3":
            assert pg("SELECT finding_key FROM open_findings WHERE message_id = 'm3'", ()) == [("F-1",)]
    assert refused == ["bad-to", "bad-metadata"]  # SQLite's json_each / json_type raise on malformed JSON

    tables = digest_tables(sqlite_db)
    assert {"message_tallies", "event_tallies", "open_findings", "sender_marks", "addressed_marks"} <= set(tables)
    for table in tables:
        assert contents(pg, table) == contents(sqlite, table), table

    # A few facts on their own: closed by reply (m3, m7), by key (7, boolean true as 'True', the first of duplicate
    # keys 'a'), only by events, thread by thread.
    assert pg("SELECT message_id, finding_key FROM open_findings ORDER BY thread_id, seq", ()) == [
        ("m6", "1.50"), ("m9", "1E5"), ("m10", None), ("m11", None), ("m30", "F-1")]
    assert pg("SELECT to_agent, to_role, ordinal FROM addressed_marks WHERE seq = 12 AND thread_id = 't1'"
              " ORDER BY to_agent, to_role", ()) == [
        ("", "reviewer", 1), ("bob", "", 1), ("bob", "reviewer", 1), ("carol", "", 1), ("carol", "reviewer", 1)]
    assert pg("SELECT messages, last_at FROM message_tallies WHERE thread_id = 't1' AND sender_agent_id = 'carol'"
              " AND kind = 'chat'", ()) == [(1, 500)]


def test_the_backfill_keeps_the_same_rows(sqlite_db: apsw.Connection, pg_db: psycopg.Connection) -> None:
    """Messages already there when 0007 runs are digested as the triggers would have."""
    before_digests = BEFORE_DIGESTS
    migrate_sqlite(sqlite_db, before_digests)
    migrate_pg(pg_db, last=before_digests)
    sqlite, pg = sqlite_run(sqlite_db), pg_run(pg_db)
    add_threads(sqlite)
    add_threads(pg)
    for row in SCRIPT:
        if row[0] not in ("bad-to", "bad-metadata"):
            sqlite(INSERT, row)
            pg(INSERT, row)
    migrate(sqlite_db)
    migrate_pg(pg_db, first=before_digests + 1)
    for table in digest_tables(sqlite_db):
        assert contents(pg, table) == contents(sqlite, table), table


# --- the audit trail ------------------------------------------------------------------------------------------------


def test_the_audit_trail_is_append_only(pg_db: psycopg.Connection) -> None:
    migrate_pg(pg_db)
    pg_db.execute("INSERT INTO audit_events (occurred_at, workspace_id, actor, actor_role, operation, outcome)"
                  " VALUES (1, 'w', 'alice', 'member', 'post', 'ok')")
    for statement in ("UPDATE audit_events SET outcome = 'changed'", "DELETE FROM audit_events"):
        with pytest.raises(psycopg.errors.RestrictViolation, match="audit_events is append-only"):
            pg_db.execute(statement)
    assert pg_db.execute("SELECT audit_id, outcome FROM audit_events").fetchall() == [(1, "ok")]
