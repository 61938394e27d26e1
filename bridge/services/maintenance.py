"""Database maintenance as operator use cases: a backup or restore runs on the file (`bridge.store.maintenance`,
before the store is opened: a restore replaces what an open store would hold), then goes into the audit trail."""

from __future__ import annotations

from typing import Any

from bridge.services.core import Bridge, Call, audit


def record(bridge: Bridge, call: Call, operation: str, result: dict[str, Any]) -> None:
    """Audit a finished maintenance operation (`db_backup`, `db_restore`, `db_copy`) with what it reported."""
    bridge.store.write(lambda conn: audit(conn, bridge, call, operation, details=result))
