"""The runtime registry fed by `heartbeat_session`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.domain.authz import Op, require
from bridge.domain.identifiers import iso
from bridge.services.core import Bridge, Call, check_frozen
from bridge.store import control as control_store
from bridge.store.engines import Connection

if TYPE_CHECKING:  # annotations only: the CLI's light commands must not import pydantic
    from bridge.domain.models import HeartbeatSessionInput


def runtime_kind(runtime: str) -> str:
    """The fallback adapter a runtime name selects: `codex…` -> codex, `claude…` -> claude, else generic."""
    lowered = runtime.lower()
    for kind in ("codex", "claude"):
        if lowered.startswith(kind):
            return kind
    return "generic"


def heartbeat_session(bridge: Bridge, call: Call, req: HeartbeatSessionInput) -> dict[str, Any]:
    """Record that the caller's session is alive (and how to reach it)."""
    principal = call.principal
    require(principal, Op.ACK)
    now = bridge.clock()

    def work(conn: Connection) -> None:
        check_frozen(conn, "heartbeat_session")
        control_store.upsert_session(conn, {
            "workspace_id": bridge.workspace, "agent_id": principal.agent_id, "session_id": req.session_id,
            "runtime": req.runtime, "runtime_kind": runtime_kind(req.runtime), "status": req.status,
            "resumable": int(req.resumable), "management_mode": req.management_mode,
            "tmux_target": req.tmux_target, "cwd": req.cwd, "now": now,
            "host_id": req.host_id or bridge.settings.local_host_id})

    bridge.store.write(work)
    bridge.events.emit("heartbeat", agent_id=principal.agent_id, session_id=req.session_id, at=now)
    return {"ok": True, "recorded_at": iso(now)}
