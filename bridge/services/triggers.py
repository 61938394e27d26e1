"""Trigger use cases: `trigger_participant`, automatic wake enqueueing, operator force/retry, listings."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from bridge.domain import wake
from bridge.domain.authz import Op
from bridge.domain.identifiers import iso, new_id
from bridge.errors import Conflict, InvalidArgument, NotFound, ThreadClosed
from bridge.services.core import Bridge, Call, Pending, audit, audited_write, check_frozen, replay_of, visible_thread
from bridge.store import control as control_store
from bridge.store import messages as message_store
from bridge.store import threads as thread_store
from bridge.store import triggers as trigger_store
from bridge.store.engines import Connection
from bridge.store.rows import loads

if TYPE_CHECKING:  # annotations only: the CLI's light commands must not import pydantic
    from bridge.domain.models import TriggerParticipantInput


def enqueue(conn: Connection, bridge: Bridge, pending: Pending, *, thread_id: str, target: str, reason: str,
            prompt: str | None, origin: str, requested_by: str, request_id: str | None = None,
            request_hash: str | None = None, force: bool = False, trigger_seq: int | None = None,
            now: int | None = None) -> dict[str, Any]:
    """Create a trigger job with the wake decision for the target's current session; return the decision output.

    `now` is the worker's tick time for automatic wakes (the job is then due in that same tick)."""
    now = bridge.clock() if now is None else now
    session = control_store.get_session(conn, bridge.workspace, target)
    decision = wake.decide(session, now, bridge.settings.session_stale)
    trigger_id = new_id("trg")
    output = {
        "trigger_id": trigger_id, "target_agent_id": target, "action": decision.action, "result": decision.result,
        "job_status": decision.job_status, "fallback_action": decision.fallback_action,
        "target_session_id": session["session_id"] if session else None,
        "runtime": session["runtime_kind"] if session else None,
        "management_mode": session["management_mode"] if session else None,
        "session_status": session["status"] if session else None, "stale_session": decision.stale,
        "triggered_at": iso(now),
    }
    trigger_store.insert_job(conn, {
        "trigger_id": trigger_id, "workspace_id": bridge.workspace, "thread_id": thread_id,
        "target_agent_id": target, "reason": reason, "prompt": prompt or wake.default_prompt(
            thread_id, reason, message_store.get_cursor(conn, thread_id, target)),
        "origin": origin, "requested_by": requested_by, "request_id": request_id, "request_hash": request_hash,
        "force": int(force), "action": decision.action, "fallback_action": decision.fallback_action,
        "decision": json.dumps(output), "status": decision.job_status, "next_attempt_at": now,
        "tmux_target": session["tmux_target"] if session else None, "trigger_seq": trigger_seq,
        "created_at": now, "updated_at": now,
    })
    pending.emit("trigger_enqueued", trigger_id=trigger_id, thread_id=thread_id, status=decision.job_status)
    return output


def auto_wake(bridge: Bridge, call: Call, *, thread_id: str, agent_id: str, seq: int, now: int) -> str | None:
    """Enqueue the automatic wake of `agent_id` for its newest addressed unread message `seq` in the thread (audited,
    and marked so each (thread, agent, seq) is woken once); return its trigger id, or None while the loop guard
    blocks the thread or a wake of the agent there is under way."""
    pending = Pending()

    def work(conn: Connection) -> str | None:
        if loop_blocked(conn, thread_id):
            return None
        if trigger_store.unfinished_job(conn, thread_id, agent_id):
            # a wake is under way: no second one now, and no mark either: when it ends, a message its
            # acknowledgement did not cover (posted while it ran) is still a candidate and gets its own
            return None
        output = enqueue(conn, bridge, pending, thread_id=thread_id, target=agent_id, reason="unread_messages",
                         prompt=None, origin="auto", requested_by=call.principal.agent_id, trigger_seq=seq, now=now)
        trigger_id = output["trigger_id"]
        audit(conn, bridge, call, "auto_wake", thread_id=thread_id, reason="unread_messages",
              details={"trigger_id": trigger_id, "agent_id": agent_id, "seq": seq})
        trigger_store.add_wake_mark(conn, thread_id, agent_id, seq, trigger_id, now)
        return trigger_id

    made = bridge.store.write(work)
    for name, fields in pending.events:
        bridge.events.emit(name, **fields)
    return made


def loop_blocked(conn: Connection, thread_id: str) -> bool:
    """True while the thread is blocked by the loop guard (waking agents would feed the loop)."""
    escalation = thread_store.open_escalation(conn, thread_id)
    return escalation is not None and escalation["reason"].startswith("loop_guard:")


def trigger_participant(bridge: Bridge, call: Call, req: TriggerParticipantInput) -> dict[str, Any]:
    """Wake a thread participant (coordinators); idempotent per request id."""
    request_id = req.request_id or call.request_id
    fingerprint = hashlib.sha256(json.dumps(
        [req.thread_id, req.target_agent_id, req.reason, req.trigger_prompt]).encode()).hexdigest()

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, req.thread_id, Op.MANAGE)
        if request_id is not None and (existing := replay_of(
                trigger_store.find_by_request(conn, bridge.workspace, call.principal.agent_id, request_id),
                stored_hash="request_hash", fingerprint=fingerprint, key="request_id", ident="trigger_id")):
            return {**loads(existing["decision"]), "job_status": existing["status"], "replayed": True}
        check_frozen(conn, "trigger_participant")
        if thread["status"] == "closed":
            raise ThreadClosed("the thread is closed", {"thread_id": req.thread_id})
        if not thread_store.is_participant(conn, req.thread_id, req.target_agent_id):
            raise InvalidArgument("target_agent_id is not a participant of the thread", {"field": "target_agent_id"})
        output = enqueue(conn, bridge, pending, thread_id=req.thread_id, target=req.target_agent_id,
                         reason=req.reason, prompt=req.trigger_prompt, origin="api",
                         requested_by=call.principal.agent_id, request_id=request_id, request_hash=fingerprint)
        audit(conn, bridge, call, "trigger_participant", thread_id=req.thread_id, reason=req.reason,
              details={"trigger_id": output["trigger_id"], "target_agent_id": req.target_agent_id,
                       "action": output["action"], "job_status": output["job_status"]})
        return {**output, "replayed": False}

    return audited_write(bridge, call, "trigger_participant", req.thread_id, work)


def force_trigger(bridge: Bridge, call: Call, thread_id: str, agent_id: str, reason: str) -> dict[str, Any]:
    """Operator trigger that skips the quiet window (audited with its reason)."""
    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        thread = visible_thread(conn, call, thread_id, Op.MANAGE)
        if thread["status"] == "closed":
            raise ThreadClosed("the thread is closed", {"thread_id": thread_id})
        if not thread_store.is_participant(conn, thread_id, agent_id):
            raise InvalidArgument("the agent is not a participant of the thread", {"field": "agent_id"})
        output = enqueue(conn, bridge, pending, thread_id=thread_id, target=agent_id, reason=reason, prompt=None,
                         origin="operator", requested_by=call.principal.agent_id, force=True)
        audit(conn, bridge, call, "force_trigger", thread_id=thread_id, reason=reason,
              details={"trigger_id": output["trigger_id"], "target_agent_id": agent_id, "force": True})
        return output

    return audited_write(bridge, call, "force_trigger", thread_id, work)


def retry_dead(bridge: Bridge, call: Call, trigger_id: str, reason: str) -> dict[str, Any]:
    """Put a failed job (dead letter) back in line from the top of the decision table; audited."""
    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        job = trigger_store.get_job(conn, trigger_id)
        if job is None or job["workspace_id"] != bridge.workspace:
            raise NotFound("trigger not found", {"trigger_id": trigger_id})
        if job["status"] != "failed":
            raise Conflict("only failed triggers can be retried", {"status": job["status"]})
        now = bridge.clock()
        session = control_store.get_session(conn, bridge.workspace, job["target_agent_id"])
        decision = wake.decide(session, now, bridge.settings.session_stale)
        trigger_store.update_job(conn, trigger_id, {
            "status": decision.job_status, "action": decision.action, "fallback_action": decision.fallback_action,
            "deliveries": 0, "resume_attempts": 0, "next_attempt_at": now, "deferred_since": None,
            "defer_reason": None, "delivered_at": None, "ack_stage": None, "ack_deadline": None, "result_code": None,
            "last_error": None, "finished_at": None, "claim_token": None, "lease_until": None,
            "tmux_target": session["tmux_target"] if session else None, "updated_at": now})
        audit(conn, bridge, call, "trigger_retry", thread_id=job["thread_id"], reason=reason,
              details={"trigger_id": trigger_id, "previous_result": job["result_code"],
                       "job_status": decision.job_status})
        pending.emit("trigger_enqueued", trigger_id=trigger_id, thread_id=job["thread_id"], status=decision.job_status)
        return {"trigger_id": trigger_id, "job_status": decision.job_status, "action": decision.action}

    return audited_write(bridge, call, "trigger_retry", None, work)


def job_view(job: dict[str, Any], attempts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A job for operators (`bridge triggers`, `inspect-thread`)."""
    view = {
        "trigger_id": job["trigger_id"], "thread_id": job["thread_id"], "target_agent_id": job["target_agent_id"],
        "status": job["status"], "origin": job["origin"], "reason": job["reason"], "action": job["action"],
        "result_code": job["result_code"], "last_error": job["last_error"], "deliveries": job["deliveries"],
        "resume_attempts": job["resume_attempts"], "tmux_target": job["tmux_target"], "force": bool(job["force"]),
        "created_at": iso(job["created_at"]), "finished_at": iso(job["finished_at"]),
        "defer_reason": job["defer_reason"],
    }
    if attempts is not None:
        view["attempts"] = [{"stage": a["stage"], "outcome": a["outcome"], "reason_code": a["reason_code"],
                             "detail": a["detail"], "at": iso(a["started_at"])} for a in attempts]
    return view


def list_triggers(bridge: Bridge, *, dead: bool = False, thread_id: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """Jobs, newest first (dead letters only with `dead`)."""
    def read(conn: Connection) -> list[dict[str, Any]]:
        return [job_view(j, trigger_store.attempts(conn, j["trigger_id"]))
                for j in trigger_store.list_jobs(conn, bridge.workspace, dead=dead, thread_id=thread_id, limit=limit)]

    return bridge.store.read(read)
