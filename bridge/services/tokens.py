"""Token issue (by the local key) and revocation; the token format and the signing itself are in `bridge.auth`."""

from __future__ import annotations

import math
import time
from typing import Any

from bridge.auth.keys import SigningKey
from bridge.auth.tokens import issue_token
from bridge.domain.identifiers import iso
from bridge.services.core import Bridge, Call, Pending, audit, audited_write
from bridge.store import control as control_store
from bridge.store.engines import Connection


def issue(bridge: Bridge, key: SigningKey, *, agent_id: str, role: str, session_id: str | None,
          ttl: float) -> tuple[str, dict[str, Any]]:
    """A signed token and its claims for an agent of this workspace.

    `iat` has whole seconds and an agent revocation refuses every token with iat < its cut-off: a token issued in
    the revocation's own second would be born revoked, so within two seconds of one this waits for the next."""
    cutoff = bridge.store.read(lambda conn: control_store.agent_revoked_at(conn, agent_id))
    wait = math.ceil(cutoff / 1000) - time.time() if cutoff is not None else 0.0
    if 0 < wait <= 2:
        time.sleep(wait)
    settings = bridge.settings
    return issue_token(key, issuer=settings.issuer, audience=settings.audience, agent_id=agent_id, role=role,
                       workspace_id=bridge.workspace, session_id=session_id, ttl=ttl)


def revoke(bridge: Bridge, call: Call, kind: str, value: str, reason: str | None) -> dict[str, Any]:
    """Revoke by `jti`, `session` or `agent` (all of the agent's tokens issued before now); audited."""
    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        now = bridge.clock()
        control_store.revoke(conn, kind, value, now, call.principal.agent_id, reason)
        audit(conn, bridge, call, "token_revoke", reason=reason, details={"kind": kind, "value": value})
        return {"revoked": True, "kind": kind, "value": value, "revoked_at": iso(now)}

    return audited_write(bridge, call, "token_revoke", None, work)
