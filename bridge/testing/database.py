"""Reading a bridge's database from outside the bridge: for checking what a run left behind.

Each read opens its own plain connection (no pragma changes a SQLite file's mode; waits up to 5 s for a lock) and
closes it, so a WAL reader never blocks the servers and a restored or replaced file is seen. `db` is a SQLite path,
a `--db` value (a path or a PostgreSQL URL), or in-process `Parts` (their database). SQL is written with `?`
parameters for both engines.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from bridge.domain.location import parse

if TYPE_CHECKING:
    from bridge.wiring import Parts


@contextlib.contextmanager
def reading(db: Path | str | Parts) -> Iterator[Any]:
    """A plain connection to an existing database (never creates one), closed after."""
    location = parse(db.bridge.settings.db if hasattr(db, "bridge") else str(db))
    if location.is_postgres:
        from bridge.store.postgres import connection

        with connection(location.url or "") as conn:
            yield conn
        return
    conn = apsw.Connection(str(location.path), flags=apsw.SQLITE_OPEN_READWRITE)
    conn.set_busy_timeout(5000)
    try:
        yield conn
    finally:
        conn.close()


def _bound(params: Sequence[Any] | Mapping[str, Any]) -> Any:
    """Parameters as the connections take them: a dict of named ones (`:name`), else a tuple (`?`)."""
    return dict(params) if isinstance(params, Mapping) else tuple(params)


def query(db: Path | str | Parts, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query, as tuples."""
    with reading(db) as conn:
        return [tuple(row) for row in conn.execute(sql, _bound(params))]


def rows(db: Path | str | Parts, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
    """Rows of a query, each a dict of its column names."""
    with reading(db) as conn:
        cursor = conn.execute(sql, _bound(params))
        return [dict(zip([d[0] for d in cursor.getdescription()], row, strict=True)) for row in cursor]


def audit_rows(db: Path | str | Parts, where: str = "true", params: Sequence[Any] = (),
               **equal: Any) -> list[dict[str, Any]]:
    """Audit events in insertion order matching the SQL `where` and every `column=value` of `equal`; `details`
    decoded ({} when empty)."""
    clauses = " AND ".join([f"({where})", *(f"{column} = ?" for column in equal)])
    found = rows(db, f"SELECT * FROM audit_events WHERE {clauses} ORDER BY audit_id", (*params, *equal.values()))
    return [{**row, "details": json.loads(row["details"]) if row["details"] else {}} for row in found]
