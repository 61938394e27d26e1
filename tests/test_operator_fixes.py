"""Refusal audit per actor (SPEC §3), `bridge unblock-thread` only on blocked threads (§5, §10), and the thread
summary of a thread of any length (§6), on real database files and a real server.
"""

from __future__ import annotations

import json
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from conftest import call_as
from helpers import create_thread

from bridge.cli.main import cli
from bridge.domain.identifiers import new_id
from bridge.domain.models import CreateThreadInput, UpdateThreadStatusInput
from bridge.domain.ratelimit import RefusalAuditLimiter
from bridge.errors import Forbidden
from bridge.services import threads as thread_service
from bridge.store import messages as message_store
from bridge.store import threads as thread_store
from bridge.testing.client import metric
from bridge.testing.database import audit_rows
from bridge.wiring import Parts

COORD = call_as("coord", "coordinator")


def suppressed_metric(api: Any, actor: str) -> float:
    """bridge_refusal_audits_suppressed_total{actor=...} from GET /metrics (0 when absent)."""
    return metric(api.raw("GET", "/metrics").body, "bridge_refusal_audits_suppressed_total", actor=actor) or 0.0


# ------------------------------------------------------------------------------------------------- refusal audit
def test_a_flood_of_refused_writes_from_one_token_is_rate_limited_and_counted(live_server, api, make_token):
    """300 forbidden create_thread calls from one valid token: a bounded number of audit rows, and every refusal
    either audited or counted as suppressed (metric), none silently lost."""
    token = make_token("mallory")
    for _ in range(300):
        reply = api.call("create_thread", token, title="t", type="workflow", participants=["a"])
        assert reply.status == 403 and reply.code == "FORBIDDEN", reply.body
    audited = audit_rows(live_server.parts, "operation = 'create_thread' AND outcome = 'refused' AND actor = ?",
                         ("mallory",))
    assert 20 <= len(audited) < 300
    assert len(audited) + suppressed_metric(api, "agent") == 300
    summaries = audit_rows(live_server.parts, "operation = 'refusals_suppressed'")
    # a summary row comes with each audited refusal that follows suppressed ones: never more than were suppressed
    assert sum(s["details"]["count"] for s in summaries) <= 300 - len(audited)
    assert all(s["details"]["actor_key"] == "agent:mallory" for s in summaries)


def test_a_tokenless_flood_does_not_silence_the_audit_of_other_callers(live_server, api, make_token):
    """The limiter is per actor: 100 tokenless 401s from 127.0.0.1 exhaust that address's budget only; a verified
    agent's refused read (audited by the HTTP edge) and refused write (audited by the service) still get rows."""
    for _ in range(100):
        reply = api.call("list_threads", None)
        assert reply.status == 401
    thread_id = create_thread(live_server.parts, COORD, ("someone",))
    outsider = make_token("outsider")
    read = api.raw("POST", "/v1/mcp/get_thread", json={"thread_id": thread_id},
                   headers={"Authorization": f"Bearer {outsider}", "x-request-id": "after-flood-read"})
    assert read.status == 403
    write = api.raw("POST", "/v1/mcp/create_thread", json={"title": "t", "type": "workflow", "participants": ["a"]},
                    headers={"Authorization": f"Bearer {outsider}", "x-request-id": "after-flood-write"})
    assert write.status == 403
    for request_id, operation in (("after-flood-read", "get_thread"), ("after-flood-write", "create_thread")):
        [row] = audit_rows(live_server.parts, "request_id = ?", (request_id,))
        assert (row["actor"], row["operation"], row["outcome"]) == ("outsider", operation, "refused")
    flood = audit_rows(live_server.parts, "outcome = 'refused' AND reason = 'UNAUTHORIZED'")
    assert 20 <= len(flood) < 100
    assert len(flood) + suppressed_metric(api, "address") == 100


def test_suppressed_refusals_are_summarised_in_the_audit_trail(parts):
    """Past the burst an actor's refusals are counted, not written; its next audited refusal comes with one
    `refusals_suppressed` row carrying the count. Another actor keeps its own budget throughout."""
    now = [0.0]
    parts.bridge.refusal_audits = RefusalAuditLimiter(per_minute=60, burst=20, clock=lambda: now[0])
    suppressed: list[dict[str, Any]] = []
    parts.bridge.events.subscribe(lambda name, fields: suppressed.append(fields)
                                  if name == "refusal_audit_suppressed" else None)

    def refuse(agent: str) -> None:
        with pytest.raises(Forbidden):
            thread_service.create_thread(parts.bridge, call_as(agent), CreateThreadInput(
                title="t", type="workflow", participants=["a"]))

    for _ in range(30):
        refuse("mallory")
    refuse("alice")
    rows = audit_rows(parts, "operation = 'create_thread'")
    assert [r["actor"] for r in rows] == ["mallory"] * 20 + ["alice"]
    assert len(suppressed) == 10 and {f["actor"] for f in suppressed} == {"agent"}
    now[0] += 1.0  # one audit slot back for mallory
    refuse("mallory")
    summary, refusal = audit_rows(parts, "audit_id > ?", (rows[-1]["audit_id"],))
    assert (summary["operation"], summary["outcome"], summary["actor"]) == ("refusals_suppressed", "suppressed",
                                                                            "mallory")
    assert summary["details"] == {"count": 10, "actor_key": "agent:mallory"}
    assert (refusal["operation"], refusal["outcome"], refusal["actor"]) == ("create_thread", "refused", "mallory")


# ------------------------------------------------------------------------------------------------- unblock-thread
def cli_json(*args: str) -> tuple[int, Any, Any]:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    out = json.loads(result.stdout) if result.stdout else None
    err = json.loads(result.stderr) if result.stderr else None
    return result.exit_code, out, err


@pytest.mark.parametrize("status", ["active", "resolved"])
def test_unblock_thread_refuses_a_thread_that_is_not_blocked(parts, status):
    """`bridge unblock-thread` moves blocked -> active and nothing else: on an active or resolved thread it exits 1
    with INVALID_THREAD_TRANSITION, changes nothing (status, messages) and audits the refusal."""
    thread_id = create_thread(parts, COORD, ("rev",))
    if status != "active":
        thread_service.update_thread_status(parts.bridge, COORD, UpdateThreadStatusInput(
            thread_id=thread_id, status=status, reason="done"))
    store = parts.bridge.store
    before = store.read(lambda c: c.execute("SELECT status, latest_seq, updated_at FROM threads WHERE thread_id = ?",
                                            (thread_id,)).fetchall())
    db = parts.bridge.settings.db
    code, out, err = cli_json("unblock-thread", "--db", db, "--thread-id", thread_id, "--reason",
                              "human_override: go", "--actor", "human:ops")
    assert (code, out) == (1, None), (code, out, err)
    assert err["error"]["code"] == "INVALID_THREAD_TRANSITION"
    assert err["error"]["details"]["from_status"] == status and err["error"]["details"]["reason"] == "not_blocked"
    after = store.read(lambda c: c.execute("SELECT status, latest_seq, updated_at FROM threads WHERE thread_id = ?",
                                           (thread_id,)).fetchall())
    assert after == before
    [row] = audit_rows(parts, "operation = 'unblock_thread'")
    assert (row["outcome"], row["actor"], row["reason"], row["thread_id"]) == (
        "refused", "human:ops", "INVALID_THREAD_TRANSITION", thread_id)


def test_unblock_thread_still_unblocks_a_blocked_thread(parts):
    thread_id = create_thread(parts, COORD, ("rev",))
    thread_service.update_thread_status(parts.bridge, COORD, UpdateThreadStatusInput(
        thread_id=thread_id, status="blocked", reason="stuck"))
    code, out, err = cli_json("unblock-thread", "--db", parts.bridge.settings.db, "--thread-id", thread_id,
                              "--reason", "human_override: fixed")
    assert code == 0, err
    assert (out["status"], out["changed"]) == ("active", True)


# ------------------------------------------------------------------------------------------------- long summaries
def insert_events(parts: Parts, thread_id: str, events: list[dict[str, Any]]) -> list[str]:
    """Append events to a thread through the store in one transaction (seqs allocated as a post does); their ids."""
    ids = [new_id("msg") for _ in events]

    def write(conn: apsw.Connection) -> None:
        for message_id, e in zip(ids, events, strict=True):
            seq = message_store.next_seq(conn, thread_id, 1_700_000_000_000)
            message_store.insert_message(conn, {
                "message_id": message_id, "thread_id": thread_id, "seq": seq, "schema_version": 1, "kind": "event",
                "event_type": e["metadata"]["event_type"], "body": e["body"], "metadata": e["metadata"],
                "sender_agent_id": "rev", "sender_session_id": "rev-s1", "sender_role": "participant",
                "in_reply_to": e.get("in_reply_to"), "to_agents": None, "to_role": None,
                "created_at": 1_700_000_000_000, "idempotency_key": None, "payload_hash": None})

    parts.bridge.store.write(write)
    return ids


def event(event_type: str, body: str, **metadata: Any) -> dict[str, Any]:
    return {"body": body, "metadata": {"event_type": event_type, **metadata}}


def test_the_summary_of_a_long_thread_sees_every_event(live_server, api, make_token):
    """Open items and the latest fix over a thread longer than 5,000 events: findings closed after the 5,000th
    event are closed, a finding reported after it is open, the latest fix_pushed is the last one."""
    parts = live_server.parts
    thread_id = create_thread(parts, COORD, ("rev",))
    early, by_id = insert_events(parts, thread_id, [
        event("finding_reported", "Early finding closed by a reply", severity="high"),
        event("finding_reported", "Early finding closed by its id", finding_id="F3")])
    insert_events(parts, thread_id, [event("note", f"progress {i}") for i in range(5_001)])
    insert_events(parts, thread_id, [{**event("finding_verified", "verified early"), "in_reply_to": early}])
    [late] = insert_events(parts, thread_id, [event("finding_reported", "Late finding\nmore", severity="low",
                                                    file="src/a.py", line=7)])
    insert_events(parts, thread_id, [event("finding_resolved", "resolved F3", finding_id="F3"),
                                     event("fix_pushed", "the fix", commit="late123")])

    summary = api.ok("summarize_thread", make_token("coord", "coordinator"), thread_id=thread_id)
    assert [(i["message_id"], i["title"], i["file"], i["line"]) for i in summary["open_items"]] == [
        (late, "Late finding", "src/a.py", 7)]
    assert summary["counts"]["open_items"] == 1
    assert "commit late123" in summary["summary"]
    assert by_id not in summary["summary"]


def test_open_items_closed_by_reply_and_by_finding_id(parts):
    """Findings sharing ids: a reply closes one, a finding id closes every earlier finding with it."""
    thread_id = create_thread(parts, COORD, ("rev",))
    ids = insert_events(parts, thread_id, [event("finding_reported", f"finding {i}", finding_id=f"F{i % 3}")
                                           for i in range(7)])
    insert_events(parts, thread_id, [{**event("finding_verified", "ok"), "in_reply_to": ids[5]},
                                     event("finding_resolved", "ok", finding_id="F1")])
    expected = [ids[i] for i in range(7) if i != 5 and i % 3 != 1]
    items = parts.bridge.store.read(lambda c: thread_service.build_summary(
        c, thread_store.get_thread(c, thread_id) or {})["open_items"])
    assert [i["message_id"] for i in items] == expected

