"""Numbered, transactional schema migrations: `migrations/NNNN_name.sql` for SQLite (tracked by `PRAGMA
user_version`), `migrations/postgresql/NNNN_name.sql` with the same numbers and names for PostgreSQL (tracked by the
table `bridge_schema`)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from bridge.domain.vocabulary import Reason
from bridge.errors import SchemaTooNew

_FOLDERS = {"sqlite": "migrations", "postgresql": "migrations/postgresql"}
_LOCK = 0x62726467  # the advisory lock PostgreSQL migrations run under ("brdg"): servers starting together queue


def migrations(dialect: str = "sqlite") -> list[tuple[int, str, str]]:
    """Every bundled migration of an engine as (number, name, sql), in order."""
    found = []
    for entry in resources.files("bridge.store").joinpath(_FOLDERS[dialect]).iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    if [n for n, _, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migrations must be numbered 0001, 0002, ... without gaps")
    return found


def latest_version() -> int:
    """The schema version this code expects."""
    return len(migrations())


def _too_new(current: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"database schema version {current} is newer than this bridge supports ({latest_version()}); "
        "upgrade the bridge instead of downgrading the database",
        {"reason": Reason.SCHEMA_TOO_NEW, "database_version": current, "code_version": latest_version()})


def recorded_version(conn: Any) -> int:
    """The schema version a database records (0 for an empty one)."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        if not conn.execute("SELECT to_regclass('bridge_schema') IS NOT NULL").fetchall()[0][0]:
            return 0
        return conn.execute("SELECT version FROM bridge_schema").fetchall()[0][0]
    return conn.execute("PRAGMA user_version").fetchall()[0][0]


def record_version(conn: Any, number: int) -> None:
    """Record the schema version (inside the migration's transaction)."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        conn.execute(f"UPDATE bridge_schema SET version = {int(number)}")
    else:
        conn.execute(f"PRAGMA user_version={int(number)}")


# What opens a migration's transaction: SQLite takes the write lock at once; PostgreSQL queues servers starting
# together on an advisory lock and creates its version table on first use.
_BEGIN = {
    "sqlite": ("BEGIN IMMEDIATE",),
    "postgresql": ("BEGIN", f"SELECT pg_advisory_xact_lock({_LOCK})",
                   "CREATE TABLE IF NOT EXISTS bridge_schema (version BIGINT NOT NULL)",
                   "INSERT INTO bridge_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM bridge_schema)"),
}


def migrate(conn: Any) -> list[int]:
    """Apply pending migrations, each in its own transaction; refuse a newer database. Returns what was applied."""
    if recorded_version(conn) == latest_version():
        return []  # current: take no write lock, so opening works (and reads go on) while another writer is busy
    dialect = getattr(conn, "dialect", "sqlite")
    applied = []
    for number, _name, sql in migrations(dialect):
        for statement in _BEGIN[dialect]:
            conn.execute(statement)
        try:
            current = recorded_version(conn)
            if current > latest_version():
                raise _too_new(current)
            if current < number:
                conn.execute(sql)
                record_version(conn, number)
                applied.append(number)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied
