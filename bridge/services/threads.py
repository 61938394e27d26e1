"""Thread use cases: create, read, list, participants, status changes with escalation, summaries."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from bridge.domain import lifecycle
from bridge.domain.authz import Op, require, sees_all_threads
from bridge.domain.identifiers import iso, new_id, parse_iso
from bridge.domain.summary import finding_item, summarize
from bridge.domain.vocabulary import EventType, Reason, Role
from bridge.errors import Conflict, Forbidden, InvalidArgument, ThreadClosed
from bridge.services.core import (
    BRIDGE_SENDER,
    Bridge,
    Call,
    Pending,
    audit,
    audited_write,
    check_frozen,
    replay_of,
    visible_thread,
)
from bridge.store import messages as message_store
from bridge.store import threads as thread_store
from bridge.store.engines import Connection
from bridge.store.rows import dumps, loads

if TYPE_CHECKING:  # annotations only: the CLI's light commands must not import pydantic
    from bridge.domain.models import (
        CreateThreadInput,
        GetThreadInput,
        ListThreadsInput,
        SummarizeThreadInput,
        UpdateParticipantsInput,
        UpdateThreadStatusInput,
    )

# ------------------------------------------------------------------------------------------------- views
def thread_view(conn: Connection, thread: dict[str, Any]) -> dict[str, Any]:
    """The wire shape of a thread, with participants and its open escalation."""
    escalation = thread_store.open_escalation(conn, thread["thread_id"])
    return {
        "thread_id": thread["thread_id"], "workspace_id": thread["workspace_id"], "title": thread["title"],
        "type": thread["type"], "status": thread["status"],
        "participants": [{"agent_id": p["agent_id"], "thread_role": p["thread_role"], "added_at": iso(p["added_at"])}
                         for p in thread_store.participants(conn, thread["thread_id"])],
        "escalation": None if escalation is None else {
            "owner_agent_id": escalation["owner_agent_id"], "since": iso(escalation["opened_at"]),
            "reason": escalation["reason"], "escalated_by": escalation["escalated_by"]},
        "latest_seq": thread["latest_seq"], "metadata": loads(thread["metadata"]),
        "created_by": thread["created_by"], "created_at": iso(thread["created_at"]),
        "updated_at": iso(thread["updated_at"]),
    }


def build_summary(conn: Connection, thread: dict[str, Any], max_messages: int = 200) -> dict[str, Any]:
    """The summary of a thread, read through `conn` (usable inside a write transaction): its tail, its tallies and
    open findings (kept as messages are inserted) and indexed lookups, whatever the length of its history."""
    thread_id = thread["thread_id"]
    latest_fix = message_store.latest_event(conn, thread_id, EventType.FIX_PUSHED)
    recent = [_decode(m) for m in message_store.latest_messages(conn, thread_id, max_messages)]
    items = [finding_item({**m, "metadata": loads(m["metadata"])})
             for m in message_store.open_findings(conn, thread_id)]
    return summarize(thread, thread_store.participants(conn, thread_id), message_store.counts(conn, thread_id),
                     items, None if latest_fix is None else _decode(latest_fix), recent,
                     thread_store.open_escalation(conn, thread_id))


def _decode(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "metadata": loads(message["metadata"]), "to_agents": loads(message["to_agents"])}


# ------------------------------------------------------------------------------------------------- system messages
def post_system_message(conn: Connection, bridge: Bridge, thread_id: str, body: str,
                        metadata: dict[str, Any]) -> int:
    """Append one of the bridge's own `system` messages to a thread (inside the caller's transaction)."""
    now = bridge.clock()
    seq = message_store.next_seq(conn, thread_id, now)
    message_store.insert_message(conn, {
        "message_id": new_id("msg"), "thread_id": thread_id, "seq": seq, "schema_version": 1, "kind": "system",
        "event_type": metadata.get("event_type"), "body": body, "metadata": metadata,
        "sender_agent_id": BRIDGE_SENDER, "sender_session_id": BRIDGE_SENDER, "sender_role": Role.SYSTEM,
        "in_reply_to": None, "to_agents": None, "to_role": None, "created_at": now, "idempotency_key": None,
        "payload_hash": None,
    })
    return seq


# ------------------------------------------------------------------------------------------------- commands
def create_thread(bridge: Bridge, call: Call, req: CreateThreadInput) -> dict[str, Any]:
    """Create a thread (coordinators); idempotent per (creator, idempotency_key)."""
    principal = call.principal
    fingerprint = dumps([req.title, req.type, [p.model_dump() for p in req.participants], req.metadata])

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        require(principal, Op.MANAGE)
        if req.idempotency_key is not None and (existing := replay_of(
                thread_store.find_by_idempotency_key(conn, bridge.workspace, principal.agent_id, req.idempotency_key),
                stored_hash="request_hash", fingerprint=fingerprint, key="idempotency_key", ident="thread_id")):
            return {"thread_id": existing["thread_id"], "status": existing["status"],
                    "created_at": iso(existing["created_at"]), "replayed": True}
        check_frozen(conn, "create_thread")
        now = bridge.clock()
        thread_id = new_id("thr")
        thread_store.insert_thread(conn, {
            "thread_id": thread_id, "workspace_id": bridge.workspace, "title": req.title, "type": req.type,
            "metadata": req.metadata, "created_by": principal.agent_id, "idempotency_key": req.idempotency_key,
            "request_hash": fingerprint, "created_at": now})
        for p in req.participants:
            thread_store.add_participant(conn, thread_id, p.agent_id, p.thread_role, now)
        audit(conn, bridge, call, "create_thread", thread_id=thread_id,
              details={"title": req.title, "type": req.type, "participants": [p.agent_id for p in req.participants]})
        pending.emit("thread_created", thread_id=thread_id)
        return {"thread_id": thread_id, "status": "active", "created_at": iso(now), "replayed": False}

    return audited_write(bridge, call, "create_thread", None, work)


def get_thread(bridge: Bridge, call: Call, req: GetThreadInput) -> dict[str, Any]:
    """One thread the caller may read."""
    return bridge.store.read(lambda conn: thread_view(conn, visible_thread(conn, call, req.thread_id, Op.READ)))


def _encode_cursor(thread: dict[str, Any]) -> str:
    raw = json.dumps([thread["updated_at"], thread["thread_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        updated_at, thread_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if type(updated_at) is not int or not 0 <= updated_at < 2**63 or not isinstance(thread_id, str):
            raise ValueError  # a forged cursor: not a bool, nor beyond SQLite's integers
        return updated_at, thread_id
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("cursor is not one this bridge issued", {"field": "cursor"}) from exc


def list_threads(bridge: Bridge, call: Call, req: ListThreadsInput) -> dict[str, Any]:
    """Threads the caller may see, oldest update first, paged by an opaque cursor."""
    principal = call.principal
    require(principal, Op.READ)
    try:
        since = None if req.updated_since is None else parse_iso(req.updated_since)
    except ValueError as exc:
        raise InvalidArgument("updated_since is not an ISO-8601 timestamp", {"field": "updated_since"}) from exc
    after = None if req.cursor is None else _decode_cursor(req.cursor)
    member = None if sees_all_threads(principal) else principal.agent_id

    def read(conn: Connection) -> dict[str, Any]:
        found = thread_store.list_threads(conn, bridge.workspace, member=member, status=req.status, type_=req.type,
                                          participant=req.participant, updated_since=since, after=after,
                                          limit=req.limit + 1)
        page = found[: req.limit]
        return {"threads": [thread_view(conn, t) for t in page],
                "next_cursor": _encode_cursor(page[-1]) if len(found) > req.limit else None}

    return bridge.store.read(read)


def update_participants(bridge: Bridge, call: Call, req: UpdateParticipantsInput) -> dict[str, Any]:
    """Add or remove participants (coordinators); posts a system message."""
    removing = set(req.remove)
    if removing & {p.agent_id for p in req.add}:
        raise InvalidArgument("an agent cannot be both added and removed", {"field": "add"})

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, req.thread_id, Op.MANAGE)
        check_frozen(conn, "update_participants")
        if thread["status"] == "closed":
            raise ThreadClosed("the thread is closed", {"thread_id": req.thread_id})
        now = bridge.clock()
        added = [p.agent_id for p in req.add if thread_store.add_participant(
            conn, req.thread_id, p.agent_id, p.thread_role, now)]
        removed = [a for a in req.remove if thread_store.remove_participant(conn, req.thread_id, a)]
        if len(thread_store.participants(conn, req.thread_id)) > 20:
            raise InvalidArgument("a thread has at most 20 participants", {"field": "add"})
        if added or removed:
            thread_store.touch(conn, req.thread_id, now)
            changes = [f"+{a}" for a in added] + [f"-{r}" for r in removed]
            post_system_message(conn, bridge, req.thread_id, "Participants updated: " + ", ".join(changes),
                                {"event_type": EventType.PARTICIPANTS_UPDATED, "added": added, "removed": removed,
                                 "actor": call.principal.agent_id})
        audit(conn, bridge, call, "update_participants", thread_id=req.thread_id,
              details={"added": added, "removed": removed})
        pending.emit("thread_updated", thread_id=req.thread_id)
        return thread_view(conn, thread_store.get_thread(conn, req.thread_id) or thread)

    return audited_write(bridge, call, "update_participants", req.thread_id, work)


def update_thread_status(bridge: Bridge, call: Call, req: UpdateThreadStatusInput) -> dict[str, Any]:
    """Change a thread's status through the state machine (coordinators and operators)."""
    principal = call.principal
    if principal.role == Role.PARTICIPANT:
        reason = Reason.WORKER_CANNOT_FORCE_CLOSE if req.status == "closed" else Reason.ROLE_NOT_ALLOWED
        _refuse_audited(bridge, call, "update_thread_status", req.thread_id,
                        Forbidden("participants cannot change a thread's status", {"reason": reason}))
    # Read the status in its own snapshot, then compare-and-set it in the write: a change in between is a CONFLICT.
    expected = req.expected_status or bridge.store.read(
        lambda conn: visible_thread(conn, call, req.thread_id, Op.MANAGE)["status"])

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, req.thread_id, Op.MANAGE)
        check_frozen(conn, "update_thread_status")
        if thread["status"] != expected:
            raise Conflict("the thread's status changed concurrently",
                           {"expected_status": expected, "current_status": thread["status"]})
        return change_status(conn, bridge, call, pending, thread, req.status, req.reason,
                             owner_agent_id=req.owner_agent_id, metadata=req.metadata)

    return audited_write(bridge, call, "update_thread_status", req.thread_id, work)


def _refuse_audited(bridge: Bridge, call: Call, operation: str, thread_id: str | None, error: Exception) -> None:
    def work(conn: Connection, pending: Pending) -> None:
        raise error

    audited_write(bridge, call, operation, thread_id, work)


def change_status(conn: Connection, bridge: Bridge, call: Call, pending: Pending, thread: dict[str, Any],
                  target: str, reason: str, *, owner_agent_id: str | None = None,
                  metadata: dict[str, Any] | None = None, operation: str = "update_thread_status") -> dict[str, Any]:
    """Apply a status change inside a write transaction: state machine, escalation record, system message, audit."""
    thread_id, current = thread["thread_id"], thread["status"]
    escalation = thread_store.open_escalation(conn, thread_id)
    if owner_agent_id is not None and target != "blocked":
        raise InvalidArgument("owner_agent_id only applies when the status is blocked", {"field": "owner_agent_id"})
    plan = lifecycle.plan_transition(current, target, actor_agent_id=call.principal.agent_id, reason=reason,
                                     owner_agent_id=escalation["owner_agent_id"] if escalation else None)
    now = bridge.clock()
    owner_changed = False
    if plan.changed:
        if not thread_store.set_status(conn, thread_id, current, target, now):
            raise Conflict("the thread's status changed concurrently", {"expected_status": current})
        if plan.closes_escalation:
            thread_store.close_escalation(conn, thread_id, closed_by=call.principal.agent_id, reason=reason, now=now)
        if plan.opens_escalation:
            snapshot = build_summary(conn, {**thread, "status": target}, 50)
            thread_store.insert_escalation(conn, thread_id, reason=reason, escalated_by=call.principal.agent_id,
                                           owner_agent_id=owner_agent_id, now=now, snapshot=snapshot)
        body = f"Thread {plan.operation}: {current} -> {target}. Reason: {reason}"
        post_system_message(conn, bridge, thread_id, body,
                            {"event_type": plan.event_type, "from_status": current, "to_status": target,
                             "reason": reason, "actor": call.principal.agent_id, "owner_agent_id": owner_agent_id,
                             **({"details": metadata} if metadata else {})})
        if plan.opens_escalation:
            pending.emit("escalation", thread_id=thread_id, reason=reason)
    elif target == "blocked" and owner_agent_id is not None and escalation is not None \
            and escalation["owner_agent_id"] != owner_agent_id:
        thread_store.set_escalation_owner(conn, thread_id, owner_agent_id)
        owner_changed = True
    audit(conn, bridge, call, operation, thread_id=thread_id, reason=reason,
          details={"before": current, "after": target, "changed": plan.changed, "operation": plan.operation,
                   "owner_before": escalation["owner_agent_id"] if escalation else None,
                   "owner_after": owner_agent_id if (owner_changed or plan.opens_escalation) else None})
    pending.emit("thread_updated", thread_id=thread_id)
    return {"thread_id": thread_id, "status": target, "updated_at": iso(now if plan.changed else thread["updated_at"]),
            "changed": plan.changed}


def summarize_thread(bridge: Bridge, call: Call, req: SummarizeThreadInput) -> dict[str, Any]:
    """The deterministic summary of a thread the caller may read."""
    return bridge.store.read(
        lambda conn: build_summary(conn, visible_thread(conn, call, req.thread_id, Op.READ), req.max_messages))
