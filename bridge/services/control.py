"""Operator controls shared by every process through the database: the write freeze."""

from __future__ import annotations

from typing import Any

from bridge.services.core import Bridge, Call, Pending, audit, audited_write
from bridge.store import control as control_store
from bridge.store.engines import Connection

FREEZE_KEY = "freeze"


def freeze_state(bridge: Bridge) -> str | None:
    """`create`, `all`, or None when writes are not frozen."""
    return bridge.store.read(lambda conn: control_store.get_flag(conn, FREEZE_KEY) or None) or None


def set_freeze(bridge: Bridge, call: Call, mode: str | None, reason: str) -> dict[str, Any]:
    """Freeze thread creation (`create`), every write (`all`), or lift the freeze (None); audited."""
    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        before = control_store.get_flag(conn, FREEZE_KEY) or None
        control_store.set_flag(conn, FREEZE_KEY, mode or "", bridge.clock())
        audit(conn, bridge, call, "freeze" if mode else "unfreeze", reason=reason,
              details={"before": before, "after": mode})
        pending.emit("freeze_changed", mode=mode)
        return {"frozen": mode is not None, "mode": mode, "previous": before}

    return audited_write(bridge, call, "freeze" if mode else "unfreeze", None, work)
