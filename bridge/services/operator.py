"""Operator use cases (docs/api.md, "Operator commands"): inspect, escalate, escalation owners, unblock, override-close.

They run on the database file directly (no server needed), as a principal with role `operator`; every mutation
and every refused mutation is audited. A write freeze does not stop operators: they are the ones working through it.
"""

from __future__ import annotations

from typing import Any

from bridge.domain.authz import Op
from bridge.domain.identifiers import iso
from bridge.domain.lifecycle import OVERRIDE_PREFIXES
from bridge.domain.vocabulary import Reason
from bridge.errors import Conflict, Forbidden, InvalidThreadTransition
from bridge.services.core import Bridge, Call, Pending, audit, audited_write, visible_thread
from bridge.services.messages import message_view
from bridge.services.threads import change_status, thread_view
from bridge.services.triggers import job_view
from bridge.store import audit as audit_store
from bridge.store import messages as message_store
from bridge.store import threads as thread_store
from bridge.store import triggers as trigger_store
from bridge.store.engines import Connection
from bridge.store.rows import loads


def inspect_thread(bridge: Bridge, call: Call, thread_id: str, recent: int = 20) -> dict[str, Any]:
    """Everything an operator needs about one thread, read in one snapshot."""
    def read(conn: Connection) -> dict[str, Any]:
        thread = visible_thread(conn, call, thread_id, Op.READ)
        view = thread_view(conn, thread)
        for p in view["participants"]:
            cursor = message_store.get_cursor(conn, thread_id, p["agent_id"])
            p["last_read_seq"] = cursor
            p["unread"] = message_store.unread_count(conn, thread_id, p["agent_id"])
        jobs = trigger_store.list_jobs(conn, bridge.workspace, thread_id=thread_id, limit=recent)
        return {
            "thread": view,
            "escalations": [{
                "reason": e["reason"], "escalated_by": e["escalated_by"], "owner_agent_id": e["owner_agent_id"],
                "opened_at": iso(e["opened_at"]), "closed_at": iso(e["closed_at"]), "closed_by": e["closed_by"],
                "close_reason": e["close_reason"]} for e in thread_store.escalation_history(conn, thread_id)],
            "loop_guard": {"no_progress": thread["no_progress"]},
            "recent_messages": [message_view(m) for m in message_store.latest_messages(conn, thread_id, recent)],
            "triggers": [job_view(j, trigger_store.attempts(conn, j["trigger_id"])) for j in jobs],
            "audit": [_audit_view(a) for a in audit_store.latest(conn, bridge.workspace, thread_id, recent)],
        }

    return bridge.store.read(read)


def _audit_view(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "occurred_at": iso(event["occurred_at"]), "details": loads(event["details"])}


def audit_trail(bridge: Bridge, *, thread_id: str | None, operation: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest audit events (oldest first in the result)."""
    return bridge.store.read(lambda conn: [
        _audit_view(a) for a in audit_store.latest(conn, bridge.workspace, thread_id, limit, operation=operation)])


def _status_change(bridge: Bridge, call: Call, operation: str, thread_id: str, target: str, reason: str,
                   owner_agent_id: str | None = None, *, only_from: str | None = None) -> dict[str, Any]:
    """Change a thread's status as the operator; with `only_from`, a thread in any other status is refused
    (INVALID_THREAD_TRANSITION, nothing changed, the refusal audited)."""
    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, thread_id, Op.MANAGE)
        if only_from is not None and thread["status"] != only_from:
            raise InvalidThreadTransition(
                f"{operation} applies to a {only_from} thread; this one is {thread['status']}",
                {"reason": f"not_{only_from}", "from_status": thread["status"], "to_status": target,
                 "required_status": only_from})
        return change_status(conn, bridge, call, pending, thread, target, reason, owner_agent_id=owner_agent_id,
                             operation=operation)

    return audited_write(bridge, call, operation, thread_id, work)


def escalate(bridge: Bridge, call: Call, thread_id: str, reason: str, owner_agent_id: str | None) -> dict[str, Any]:
    """active → blocked, opening an escalation record (optionally with an owner)."""
    return _status_change(bridge, call, "escalate_thread", thread_id, "blocked", reason, owner_agent_id)


def unblock(bridge: Bridge, call: Call, thread_id: str, reason: str) -> dict[str, Any]:
    """blocked → active, under the owner rule; any other status is refused (use update_thread_status to reopen a
    resolved thread)."""
    return _status_change(bridge, call, "unblock_thread", thread_id, "active", reason, only_from="blocked")


def override_close(bridge: Bridge, call: Call, thread_id: str, reason: str) -> dict[str, Any]:
    """Close a thread whatever its owner, with a `human_override:` reason."""
    if not reason.startswith(OVERRIDE_PREFIXES[0]):
        def refuse(conn: Connection, pending: Pending) -> None:
            visible_thread(conn, call, thread_id, Op.MANAGE)
            raise Forbidden("override-close needs a reason starting with human_override:",
                            {"reason": Reason.OVERRIDE_REQUIRED, "override_prefixes": [OVERRIDE_PREFIXES[0]]})

        audited_write(bridge, call, "override_close_thread", thread_id, refuse)
    return _status_change(bridge, call, "override_close_thread", thread_id, "closed", reason)


def set_owner(bridge: Bridge, call: Call, thread_id: str, owner_agent_id: str, reason: str, *,
              reassign: bool) -> dict[str, Any]:
    """Assign (blocked, no owner yet) or reassign (blocked, owner set) the escalation owner; else CONFLICT."""
    operation = "reassign_escalation_owner" if reassign else "assign_escalation_owner"

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, thread_id, Op.MANAGE)
        escalation = thread_store.open_escalation(conn, thread_id)
        current = escalation["owner_agent_id"] if escalation else None
        if thread["status"] != "blocked" or escalation is None:
            raise Conflict("the thread is not blocked", {"status": thread["status"], "owner_agent_id": None})
        if reassign and current is None:
            raise Conflict("no owner to reassign: use assign-escalation-owner",
                           {"status": thread["status"], "owner_agent_id": None})
        if not reassign and current is not None:
            raise Conflict("the escalation already has an owner: use reassign-escalation-owner",
                           {"status": thread["status"], "owner_agent_id": current})
        thread_store.set_escalation_owner(conn, thread_id, owner_agent_id)
        audit(conn, bridge, call, operation, thread_id=thread_id, reason=reason,
              details={"owner_before": current, "owner_after": owner_agent_id})
        return {"thread_id": thread_id, "status": thread["status"], "owner_agent_id": owner_agent_id,
                "previous_owner_agent_id": current}

    return audited_write(bridge, call, operation, thread_id, work)


def get_owner(bridge: Bridge, call: Call, thread_id: str) -> dict[str, Any]:
    """The escalation owner of a thread (null when not blocked or unassigned)."""
    def read(conn: Connection) -> dict[str, Any]:
        thread = visible_thread(conn, call, thread_id, Op.READ)
        escalation = thread_store.open_escalation(conn, thread_id)
        return {"thread_id": thread_id, "status": thread["status"],
                "owner_agent_id": escalation["owner_agent_id"] if escalation else None,
                "escalated_at": iso(escalation["opened_at"]) if escalation else None,
                "reason": escalation["reason"] if escalation else None}

    return bridge.store.read(read)
