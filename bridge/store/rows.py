"""Small helpers shared by the query modules."""

from __future__ import annotations

import json
from typing import Any

import apsw


def dumps(value: Any) -> str:
    """JSON text for a stored column (ASCII-safe, compact, stable key order)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None) -> Any:
    """Decode a stored JSON column (None stays None)."""
    return None if text is None else json.loads(text)


class Where:
    """A WHERE clause built from conditions, each with its parameters; `None` filters are left out.

    `Where("thread_id = ?", tid).equal("kind", kind)` -> `str(where)` is the clause, `where.params` its values."""

    def __init__(self, condition: str, *params: Any):
        self.conditions: list[str] = []
        self.params: list[Any] = []
        self.add(condition, *params)

    def add(self, condition: str, *params: Any) -> Where:
        """AND a condition with its `?` parameters."""
        self.conditions.append(condition)
        self.params.extend(params)
        return self

    def when(self, value: Any, condition: str) -> Where:
        """AND `condition` with `value` as its one parameter, unless `value` is None."""
        return self if value is None else self.add(condition, value)

    def equal(self, column: str, value: Any) -> Where:
        """AND `column = value`, unless `value` is None."""
        return self.when(value, f"{column} = ?")

    def __str__(self) -> str:
        return " AND ".join(self.conditions)


def dialect(conn: Any) -> str:
    """The SQL dialect of a connection: "sqlite" (apsw) or "postgresql" (`PgConnection`)."""
    return getattr(conn, "dialect", "sqlite")


def greatest(conn: Any) -> str:
    """The SQL function of the larger of two values: SQLite's two-argument MAX, PostgreSQL's GREATEST."""
    return "GREATEST" if dialect(conn) == "postgresql" else "MAX"


_TABLES = {"sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
           "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"}


def table_names(conn: Any) -> list[str]:
    """The database's own tables, by name."""
    return [row[0] for row in conn.execute(_TABLES[dialect(conn)])]


def rows(conn: apsw.Connection, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
    """Run a query and return the rows as dicts keyed by column name."""
    cursor = conn.execute(sql, params)
    try:
        names = [d[0] for d in cursor.getdescription()]
    except apsw.ExecutionCompleteError:
        return []
    return [dict(zip(names, row, strict=True)) for row in cursor]


def one(conn: apsw.Connection, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
    """The first row as a dict, or None."""
    found = rows(conn, sql, params)
    return found[0] if found else None


def scalar(conn: apsw.Connection, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
    """The first column of the first row, or None."""
    for row in conn.execute(sql, params):
        return row[0]
    return None
