"""Helpers every test module shares: rows read straight from a database file, and the common `/v1` calls made
with the in-process `ApiClient` (conftest) or with services on in-process parts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from bridge.store.db import connect


def db_rows(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the database file through a fresh connection (closed before returning)."""
    with contextlib.closing(connect(db, create=False)) as conn:
        return [tuple(row) for row in conn.execute(sql, params)]
