"""Token revocation (the issuer itself is in `bridge.auth`)."""

from __future__ import annotations

from typing import Any

import apsw

from bridge.domain.identifiers import iso
from bridge.services.core import Bridge, Call, Pending, audit, audited_write
from bridge.store import control as control_store


def revoke(bridge: Bridge, call: Call, kind: str, value: str, reason: str | None) -> dict[str, Any]:
    """Revoke by `jti`, `session` or `agent` (all of the agent's tokens issued before now); audited."""
    def work(conn: apsw.Connection, pending: Pending) -> dict[str, Any]:
        now = bridge.clock()
        control_store.revoke(conn, kind, value, now, call.principal.agent_id, reason)
        audit(conn, bridge, call, "token_revoke", reason=reason, details={"kind": kind, "value": value})
        return {"revoked": True, "kind": kind, "value": value, "revoked_at": iso(now)}

    return audited_write(bridge, call, "token_revoke", None, work)
