"""Numbered, transactional schema migrations (`migrations/NNNN_name.sql`, tracked by `PRAGMA user_version`)."""

from __future__ import annotations

import re
from importlib import resources

import apsw

from bridge.domain.vocabulary import Reason
from bridge.errors import SchemaTooNew


def migrations() -> list[tuple[int, str, str]]:
    """Every bundled migration as (number, name, sql), in order."""
    found = []
    for entry in resources.files("bridge.store").joinpath("migrations").iterdir():
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


def migrate(conn: apsw.Connection) -> list[int]:
    """Apply pending migrations, each in its own `BEGIN IMMEDIATE` transaction; refuse a newer database."""
    if conn.execute("PRAGMA user_version").fetchall()[0][0] == latest_version():
        return []  # current: take no write lock, so opening works (and reads go on) while another writer is busy
    applied = []
    for number, _name, sql in migrations():
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchall()[0][0]
            if current > latest_version():
                raise SchemaTooNew(
                    f"database schema version {current} is newer than this bridge supports ({latest_version()}); "
                    "upgrade the bridge instead of downgrading the database",
                    {"reason": Reason.SCHEMA_TOO_NEW, "database_version": current, "code_version": latest_version()})
            if current < number:
                conn.execute(sql)
                conn.execute(f"PRAGMA user_version={number}")
                applied.append(number)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied
