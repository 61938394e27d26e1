"""Message use cases: post (ordering, idempotency, quota, loop guard), read with long-poll, ack, inbox."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.domain import loopguard
from bridge.domain.authz import Op, require
from bridge.domain.identifiers import iso, new_id
from bridge.domain.ratelimit import retry_after_header, take_token
from bridge.domain.vocabulary import Reason, Role
from bridge.errors import Conflict, Forbidden, InvalidArgument, RateLimited, ThreadClosed
from bridge.services.core import Bridge, Call, Pending, audited_write, check_frozen, replay_of, visible_thread
from bridge.services.threads import change_status
from bridge.store import messages as message_store
from bridge.store import shared as shared_store
from bridge.store import threads as thread_store
from bridge.store.engines import Connection
from bridge.store.rows import loads

if TYPE_CHECKING:  # annotations only: the CLI's light commands must not import pydantic
    from bridge.domain.models import AckReadInput, InboxInput, PostMessageInput, ReadMessagesInput

LOOP_GUARD_ACTOR = "bridge:loop_guard"
T = TypeVar("T")


def message_view(m: dict[str, Any]) -> dict[str, Any]:
    """The wire shape of a stored message."""
    return {
        "message_id": m["message_id"], "thread_id": m["thread_id"], "seq": m["seq"],
        "schema_version": m["schema_version"], "kind": m["kind"], "body": m["body"],
        "metadata": loads(m["metadata"]), "sender_agent_id": m["sender_agent_id"],
        "sender_session_id": m["sender_session_id"], "in_reply_to": m["in_reply_to"],
        "to": loads(m["to_agents"]), "to_role": m["to_role"], "created_at": iso(m["created_at"]),
    }


def post_message(bridge: Bridge, call: Call, req: PostMessageInput) -> dict[str, Any]:
    """Append a message: seq allocated in the transaction, answered only after COMMIT."""
    principal = call.principal
    if req.kind == "system" and principal.role not in (Role.COORDINATOR, Role.OPERATOR):
        raise Forbidden("kind=system is reserved to coordinators and the bridge", {"reason": Reason.SYSTEM_RESERVED})
    fingerprint = hashlib.sha256(req.payload_fingerprint().encode()).hexdigest()
    event_type = req.metadata.get("event_type") if isinstance(req.metadata.get("event_type"), str) else None

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, req.thread_id, Op.POST)
        if req.idempotency_key is not None and (existing := replay_of(
                message_store.find_by_idempotency_key(conn, req.thread_id, principal.agent_id, req.idempotency_key),
                stored_hash="payload_hash", fingerprint=fingerprint, key="idempotency_key", ident="message_id")):
            return {"message_id": existing["message_id"], "seq": existing["seq"], "thread_status": thread["status"],
                    "created_at": iso(existing["created_at"]), "replayed": True}
        check_frozen(conn, "post_message")
        if thread["status"] == "closed":
            raise ThreadClosed("the thread is closed", {"thread_id": req.thread_id})
        _check_addressing(conn, req)
        now = bridge.clock()
        _take_write_quota(conn, bridge, principal.agent_id, now)
        verdict = _loop_verdict(conn, bridge, call, thread, req, event_type)
        seq = message_store.next_seq(conn, req.thread_id, now,
                                     no_progress=None if verdict is None else verdict.no_progress)
        message_id = new_id("msg")
        message_store.insert_message(conn, {
            "message_id": message_id, "thread_id": req.thread_id, "seq": seq, "schema_version": req.schema_version,
            "kind": req.kind, "event_type": event_type, "body": req.body, "metadata": req.metadata,
            "sender_agent_id": principal.agent_id, "sender_session_id": principal.session_id,
            "sender_role": principal.role, "in_reply_to": req.in_reply_to, "to_agents": req.to,
            "to_role": req.to_role, "created_at": now, "idempotency_key": req.idempotency_key,
            "payload_hash": fingerprint,
        })
        pending.emit("message_posted", thread_id=req.thread_id, seq=seq, created_at=now)
        status = _loop_guard(conn, bridge, call, pending, thread, req, verdict)
        return {"message_id": message_id, "seq": seq, "thread_status": status, "created_at": iso(now),
                "replayed": False}

    return audited_write(bridge, call, "post_message", req.thread_id, work)


def _take_write_quota(conn: Connection, bridge: Bridge, agent_id: str, now: int) -> None:
    """Take one token of the agent's write quota, kept in the database (in this transaction) so the quota holds
    whichever process serves the agent; RATE_LIMITED when the bucket is empty (nothing stored then)."""
    per_minute = bridge.settings.write_quota_per_min
    if per_minute <= 0:
        return
    bucket, wait_ms = take_token(shared_store.quota_bucket(conn, agent_id), now, per_minute / 60_000,
                                 bridge.settings.write_burst)
    if wait_ms > 0:
        raise RateLimited("write quota exceeded for this agent",
                          {"reason": Reason.WRITE_QUOTA, "quota_per_min": per_minute},
                          retry_after=retry_after_header(wait_ms / 1000))
    shared_store.save_quota_bucket(conn, agent_id, bucket)


def _check_addressing(conn: Connection, req: PostMessageInput) -> None:
    if req.in_reply_to is not None:
        target = message_store.get_message(conn, req.in_reply_to)
        if target is None or target["thread_id"] != req.thread_id:
            raise InvalidArgument("in_reply_to must name a message of the same thread", {"field": "in_reply_to"})
    if req.to or req.to_role is not None:
        members = {p["agent_id"]: p["thread_role"] for p in thread_store.participants(conn, req.thread_id)}
        strangers = [a for a in req.to or [] if a not in members]
        if strangers:
            raise InvalidArgument("to must name participants of the thread",
                                  {"field": "to", "not_participants": strangers})
        if req.to_role is not None and req.to_role not in members.values():
            raise InvalidArgument("to_role matches no participant's thread role", {"field": "to_role"})


def _loop_verdict(conn: Connection, bridge: Bridge, call: Call, thread: dict[str, Any], req: PostMessageInput,
                  event_type: str | None) -> loopguard.LoopVerdict | None:
    """Count the post's finding and judge it; its no-progress count is stored with the seq (`next_seq`). None for
    system messages, which the loop guard ignores."""
    if req.kind == "system":
        return None
    finding = loopguard.finding_key(event_type=event_type, metadata=req.metadata, body=req.body)
    reports = message_store.bump_finding(conn, req.thread_id, finding) if finding else None
    return loopguard.judge(
        previous_no_progress=thread["no_progress"],
        progress=loopguard.is_progress(kind=req.kind, event_type=event_type, sender_role=call.principal.role),
        finding_reports=reports, finding=finding, max_turns=bridge.settings.loop_guard_turns,
        max_repeats=bridge.settings.loop_guard_repeats)


def _loop_guard(conn: Connection, bridge: Bridge, call: Call, pending: Pending, thread: dict[str, Any],
                req: PostMessageInput, verdict: loopguard.LoopVerdict | None) -> str:
    """Auto-escalate when the post tripped the loop guard. Returns the thread status after."""
    if verdict is None or verdict.trip_reason is None or thread["status"] != "active":
        return thread["status"]
    guard = Call(principal=call.principal.__class__(
        agent_id=LOOP_GUARD_ACTOR, workspace_id=call.principal.workspace_id, role=Role.OPERATOR,
        session_id="bridge"), request_id=call.request_id)
    current = thread_store.get_thread(conn, req.thread_id) or thread
    change_status(conn, bridge, guard, pending, current, "blocked", verdict.trip_reason)
    pending.emit("loop_guard_trip", thread_id=req.thread_id, kind=verdict.kind)
    return "blocked"


def read_messages(bridge: Bridge, call: Call, req: ReadMessagesInput) -> dict[str, Any]:
    """Messages after `since_seq`; with `wait_ms` waits for the first one committed by any process."""
    principal = call.principal
    started = time.time()

    def page(conn: Connection) -> dict[str, Any]:
        thread = visible_thread(conn, call, req.thread_id, Op.READ)
        found = message_store.read_range(conn, req.thread_id, since_seq=req.since_seq, limit=req.limit + 1,
                                         kinds=req.kinds, from_agent_id=req.from_agent_id,
                                         event_type=req.event_type)
        batch = found[: req.limit]
        return {"messages": [message_view(m) for m in batch],
                "next_seq": batch[-1]["seq"] if batch else req.since_seq,
                "has_more": len(found) > req.limit, "latest_seq": thread["latest_seq"],
                "unread_count": message_store.unread_count(conn, req.thread_id, principal.agent_id)}

    result = bridge.store.read(page)
    if result["messages"] or req.wait_ms == 0:
        return result
    arrived, refusal = _long_poll(bridge, principal.agent_id, req.wait_ms,
                                  lambda: _nonempty(bridge.store.read(page)))
    if refusal is not None:
        return {**result, "wait": refusal}
    if arrived is None:
        return bridge.store.read(page)
    for m in arrived["messages"]:
        created = m["created_at"]
        bridge.events.emit("message_visible", thread_id=req.thread_id, created_at=created, waited_since=started)
    return arrived


def _nonempty(result: dict[str, Any]) -> dict[str, Any] | None:
    return result if result["messages"] else None


def _long_poll(bridge: Bridge, agent_id: str, wait_ms: int,
               check: Callable[[], T | None]) -> tuple[T | None, dict[str, Any] | None]:
    """Wait up to `wait_ms` for `check()` to return a value, holding one of the long-poll slots (waits.py).

    Returns (value or None at the deadline, None), or (None, the `wait` hint) at once when no slot is free.
    """
    deadline = time.monotonic() + wait_ms / 1000
    with bridge.waits.slot(agent_id, deadline) as refusal:
        if refusal is not None:
            bridge.events.emit("long_poll_refused", reason=refusal.reason)
            return None, refusal.hint()
        return bridge.store.wait_until(check, deadline), None


def ack_read(bridge: Bridge, call: Call, req: AckReadInput) -> dict[str, Any]:
    """Advance the caller's read cursor (monotonic, at most the latest seq)."""
    principal = call.principal

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, req.thread_id, Op.ACK)
        check_frozen(conn, "ack_read")
        if req.last_read_seq > thread["latest_seq"]:
            raise InvalidArgument("last_read_seq is beyond the thread's latest seq",
                                  {"field": "last_read_seq", "latest_seq": thread["latest_seq"]})
        current = message_store.get_cursor(conn, req.thread_id, principal.agent_id)
        if req.last_read_seq < current:
            raise Conflict("read cursors only move forward",
                           {"reason": Reason.CURSOR_REGRESSION, "last_read_seq": current})
        now = bridge.clock()
        if req.last_read_seq > current:
            message_store.set_cursor(conn, req.thread_id, principal.agent_id, req.last_read_seq, now)
            pending.emit("cursor_advanced", thread_id=req.thread_id, agent_id=principal.agent_id,
                         seq=req.last_read_seq)
        return {"ok": True, "last_read_seq": req.last_read_seq, "updated_at": iso(now)}

    return _write_unaudited(bridge, work)


def _write_unaudited(bridge: Bridge, work: Any) -> dict[str, Any]:
    pending = Pending()
    result = bridge.store.write(lambda conn: work(conn, pending))
    for name, fields in pending.events:
        bridge.events.emit(name, **fields)
    return result


def inbox(bridge: Bridge, call: Call, req: InboxInput) -> dict[str, Any]:
    """The caller's threads with unread messages; with `wait_ms` waits until there is one."""
    principal = call.principal
    require(principal, Op.ACK)

    def read(conn: Connection) -> dict[str, Any]:
        entries = message_store.inbox(conn, bridge.workspace, principal.agent_id, req.limit)
        return {"threads": [{
            "thread_id": e["thread_id"], "title": e["title"], "status": e["status"],
            "unread_count": e["unread_count"], "last_read_seq": e["last_read_seq"], "latest_seq": e["latest_seq"],
            "addressed_to_me": e["addressed_to_me"]} for e in entries if e["unread_count"] > 0]}

    result = bridge.store.read(read)
    if result["threads"] or req.wait_ms == 0:
        return result
    arrived, refusal = _long_poll(bridge, principal.agent_id, req.wait_ms,
                                  lambda: (lambda r: r if r["threads"] else None)(bridge.store.read(read)))
    if refusal is not None:
        return {**result, "wait": refusal}
    return arrived or result
