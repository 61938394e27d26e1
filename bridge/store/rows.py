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
