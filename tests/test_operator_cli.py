"""Operator CLI (SPEC §10, with the lifecycle of §5): thread operations, owners, overrides, `threads`, `audit`,
freeze, `db migrate|check|backup|restore|vacuum` and `doctor`, on real database files with no server running
(and once next to a live server).

Most commands run in-process through click's CliRunner; exit codes, stderr JSON and the "database unavailable"
cases also run as real `python -m bridge` subprocesses. Data is seeded through the services, as an API call
would, and checked directly in the database file.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import stat
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner, Result
from helpers import create_thread, post_as

from bridge.cli.main import cli
from bridge.domain.authz import Principal
from bridge.domain.models import (
    AckReadInput,
    CreateThreadInput,
    GetThreadInput,
    ParticipantSpec,
    TriggerParticipantInput,
    UpdateThreadStatusInput,
)
from bridge.errors import Unavailable
from bridge.services import messages as message_service
from bridge.services import threads as thread_service
from bridge.services import triggers as trigger_service
from bridge.services.core import Call
from bridge.settings import Settings
from bridge.store.migrate import latest_version, record_version, recorded_version
from bridge.testing.database import audit_rows, reading, rows
from bridge.testing.processes import run_bridge, unused_port
from bridge.wiring import Parts, build

OPERATOR_COMMANDS_ON_A_THREAD = (
    ("inspect-thread",),
    ("get-escalation-owner",),
    ("escalate-thread", "--reason", "stuck"),
    ("assign-escalation-owner", "--owner-agent-id", "alice", "--reason", "take it"),
    ("reassign-escalation-owner", "--owner-agent-id", "alice", "--reason", "take it"),
    ("unblock-thread", "--reason", "human_override: go"),
    ("override-close-thread", "--reason", "human_override: done"),
)


# ------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch, tmp_path):
    """The CLI reads BRIDGE_* from the environment: start from none, in a scratch directory (a command that
    missed its --db can never touch a ./bridge.db outside the test)."""
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def as_agent(agent_id: str, role: str = "participant") -> Call:
    return Call(Principal(agent_id=agent_id, workspace_id="default", role=role, session_id=f"{agent_id}-s1"),
                request_id="seed")


COORD = as_agent("coord", "coordinator")


@contextlib.contextmanager
def services(db: Path) -> Iterator[Parts]:
    """The bridge's parts on `db` (no write quota, no loop guard), closed afterwards: the "server" is down."""
    parts = build(Settings.load({"db": str(db), "write_quota_per_min": 0, "loop_guard_turns": 0}, env={}))
    try:
        yield parts
    finally:
        parts.close()


def seed_threads(db: Path, *titles: str) -> list[str]:
    """Create one thread per title (participants alice and bob), each with one message; return their ids."""
    with services(db) as parts:
        ids = [create_thread(parts, COORD, ("alice", "bob"), title) for title in titles]
        for thread_id in ids:
            post_as(parts, as_agent("alice"), thread_id, f"hello on {thread_id}")
    return ids


def bridge(*args: str, env: dict[str, str] | None = None) -> Result:
    """One in-process `bridge` invocation."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ok(*args: str) -> Any:
    """Run a command with --json; assert exit 0 and nothing on stderr; return the one JSON document."""
    result = bridge(*args, "--json")
    assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
    assert result.stderr == ""
    return json.loads(result.stdout)


def refused(exit_code: int, *args: str) -> dict[str, Any]:
    """Run a command with --json; assert its exit code, nothing on stdout and a JSON error on stderr."""
    result = bridge(*args, "--json")
    assert result.exit_code == exit_code, (args, result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert set(error) >= {"code", "message", "details"}
    return error


def thread_row(db: Path, thread_id: str) -> dict[str, Any]:
    return rows(db, "SELECT * FROM threads WHERE thread_id = ?", (thread_id,))[0]


# ------------------------------------------------------------------------------------------------- inspect
def test_inspect_thread_shows_cursors_unread_escalation_messages_triggers_and_audit(db):
    with services(db) as parts:
        req = CreateThreadInput(title="auth review", type="workflow", participants=[
            ParticipantSpec(agent_id="alice", thread_role="author"), ParticipantSpec(agent_id="bob",
                                                                                     thread_role="reviewer")])
        thread_id = thread_service.create_thread(parts.bridge, COORD, req)["thread_id"]
        post_as(parts, as_agent("alice"), thread_id, "first finding: token leak")
        post_as(parts, as_agent("alice"), thread_id, "second note")
        post_as(parts, as_agent("bob"), thread_id, "reply from bob")
        message_service.ack_read(parts.bridge, as_agent("alice"), AckReadInput(thread_id=thread_id, last_read_seq=2))
        trigger = trigger_service.trigger_participant(parts.bridge, COORD, TriggerParticipantInput(
            thread_id=thread_id, target_agent_id="bob", reason="please re-review", request_id="wake-1"))
    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck on review",
       "--owner-agent-id", "alice", "--actor", "human:ops")  # a system message: seq 4

    doc = ok("inspect-thread", "--db", str(db), "--thread-id", thread_id)
    thread = doc["thread"]
    assert (thread["thread_id"], thread["status"], thread["latest_seq"]) == (thread_id, "blocked", 4)
    assert thread["escalation"]["owner_agent_id"] == "alice"
    assert thread["escalation"]["reason"] == "stuck on review"
    people = {p["agent_id"]: p for p in thread["participants"]}
    assert set(people) == {"alice", "bob"}
    assert people["alice"]["thread_role"] == "author"
    # unread = after the cursor and not sent by the agent itself (SPEC §7): alice read 2, then bob's 3 and the
    # bridge's escalation message 4 arrived; bob read nothing and sent 3.
    assert (people["alice"]["last_read_seq"], people["alice"]["unread"]) == (2, 2)
    assert (people["bob"]["last_read_seq"], people["bob"]["unread"]) == (0, 3)
    recent = doc["recent_messages"]
    assert [m["seq"] for m in recent] == [1, 2, 3, 4]
    assert [m["body"] for m in recent[:3]] == ["first finding: token leak", "second note", "reply from bob"]
    assert recent[3]["kind"] == "system" and recent[3]["metadata"]["event_type"] == "thread_escalated"
    assert [(t["trigger_id"], t["target_agent_id"]) for t in doc["triggers"]] == [(trigger["trigger_id"], "bob")]
    operations = [a["operation"] for a in doc["audit"]]
    assert {"create_thread", "trigger_participant", "escalate_thread"} <= set(operations)
    assert all(a["thread_id"] == thread_id for a in doc["audit"])

    text = bridge("inspect-thread", "--db", str(db), "--thread-id", thread_id)
    assert text.exit_code == 0, text.stderr
    for needle in ("auth review", "blocked", "stuck on review", "alice", "bob", "reviewer", "first finding",
                   "reply from bob", trigger["trigger_id"], "escalate_thread", "human:ops"):
        assert needle in text.stdout, needle
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.stdout)  # a human table by default, not JSON


def test_read_only_commands_do_not_write(db):
    [thread_id] = seed_threads(db, "quiet")
    before = audit_rows(db)
    ok("inspect-thread", "--db", str(db), "--thread-id", thread_id)
    ok("get-escalation-owner", "--db", str(db), "--thread-id", thread_id)
    ok("threads", "--db", str(db))
    ok("audit", "--db", str(db))
    assert audit_rows(db) == before


# ------------------------------------------------------------------------------------------------- lifecycle
def test_escalate_thread_blocks_opens_an_escalation_and_is_audited_as_the_os_user(db):
    [thread_id] = seed_threads(db, "t")
    out = ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "needs a human")
    assert out["thread_id"] == thread_id and out["status"] == "blocked" and out["changed"] is True
    assert thread_row(db, thread_id)["status"] == "blocked"
    escalation = rows(db, "SELECT * FROM escalations WHERE thread_id = ?", (thread_id,))
    assert len(escalation) == 1 and escalation[0]["closed_at"] is None
    assert escalation[0]["reason"] == "needs a human" and escalation[0]["owner_agent_id"] is None
    system = rows(db, "SELECT * FROM messages WHERE thread_id = ? AND kind = 'system'", (thread_id,))
    assert [m["event_type"] for m in system] == ["thread_escalated"]

    [event] = audit_rows(db, operation="escalate_thread")
    assert event["actor"] == f"human:{getpass.getuser()}"  # --actor defaults to the OS user
    assert event["actor_role"] == "operator"
    assert (event["thread_id"], event["reason"], event["outcome"]) == (thread_id, "needs a human", "ok")
    assert (event["details"]["before"], event["details"]["after"]) == ("active", "blocked")

    owner = ok("get-escalation-owner", "--db", str(db), "--thread-id", thread_id)
    assert owner["thread_id"] == thread_id and owner["owner_agent_id"] is None and owner["status"] == "blocked"

    again = ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "still stuck")
    assert again["status"] == "blocked" and again["changed"] is False  # same status: a no-op, still audited
    assert len(audit_rows(db, operation="escalate_thread")) == 2
    assert len(rows(db, "SELECT * FROM escalations WHERE thread_id = ?", (thread_id,))) == 1


def test_owner_rule_refuses_a_non_owner_unblock_and_audits_the_refusal(db):
    [thread_id] = seed_threads(db, "t")
    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck", "--owner-agent-id",
       "alice", "--actor", "human:ops")
    error = refused(1, "unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "looks fine",
                    "--actor", "human:bob")
    assert error["code"] == "FORBIDDEN"
    assert thread_row(db, thread_id)["status"] == "blocked"
    [event] = audit_rows(db, operation="unblock_thread")
    assert (event["outcome"], event["actor"], event["actor_role"], event["thread_id"]) == (
        "refused", "human:bob", "operator", thread_id)

    # the non-JSON form: a one-line error on stderr, nothing on stdout, the same exit code
    plain = bridge("unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "looks fine")
    assert plain.exit_code == 1 and plain.stdout == "" and "FORBIDDEN" in plain.stderr

    unblocked = ok("unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason",
                   "human_override: verified by hand", "--actor", "human:bob")
    assert unblocked["status"] == "active" and unblocked["changed"] is True
    assert thread_row(db, thread_id)["status"] == "active"
    [escalation] = rows(db, "SELECT * FROM escalations WHERE thread_id = ?", (thread_id,))
    assert escalation["closed_at"] is not None  # leaving blocked closes the record, kept for history
    assert ok("get-escalation-owner", "--db", str(db), "--thread-id", thread_id)["owner_agent_id"] is None
    outcomes = [(e["outcome"], e["actor"]) for e in audit_rows(db, operation="unblock_thread")]
    assert outcomes == [("refused", "human:bob"), ("refused", f"human:{getpass.getuser()}"), ("ok", "human:bob")]
    assert audit_rows(db, operation="unblock_thread")[-1]["details"]["before"] == "blocked"


def test_the_owner_may_unblock_without_an_override(db):
    [thread_id] = seed_threads(db, "t")
    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck", "--owner-agent-id",
       "human:carol")
    out = ok("unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "fixed it",
             "--actor", "human:carol")
    assert out["status"] == "active"


def test_override_close_needs_the_human_override_prefix(db):
    [thread_id] = seed_threads(db, "t")
    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck", "--owner-agent-id", "alice")
    for reason in ("just close it", "coordinator_override: close", " human_override: leading space"):
        error = refused(1, "override-close-thread", "--db", str(db), "--thread-id", thread_id, "--reason", reason,
                        "--actor", "human:ops")
        assert error["code"] == "FORBIDDEN", reason
        assert thread_row(db, thread_id)["status"] == "blocked"
    refusals = audit_rows(db, operation="override_close_thread")
    assert [(e["outcome"], e["actor"], e["thread_id"]) for e in refusals] == [("refused", "human:ops", thread_id)] * 3

    out = ok("override-close-thread", "--db", str(db), "--thread-id", thread_id, "--reason",
             "human_override: abandoned", "--actor", "human:ops")
    assert out["status"] == "closed" and out["changed"] is True  # the override beats the owner rule
    assert thread_row(db, thread_id)["status"] == "closed"
    event = audit_rows(db, operation="override_close_thread")[-1]
    assert (event["outcome"], event["reason"]) == ("ok", "human_override: abandoned")
    assert (event["details"]["before"], event["details"]["after"]) == ("blocked", "closed")
    assert rows(db, "SELECT closed_at FROM escalations WHERE thread_id = ?", (thread_id,))[0]["closed_at"]


def test_close_of_a_blocked_thread_without_owner_still_needs_the_prefix(db):
    [thread_id] = seed_threads(db, "t")
    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck")
    assert refused(1, "override-close-thread", "--db", str(db), "--thread-id", thread_id, "--reason",
                   "no owner, close anyway")["code"] == "FORBIDDEN"
    assert thread_row(db, thread_id)["status"] == "blocked"


def test_assign_reassign_and_get_escalation_owner(db):
    [thread_id] = seed_threads(db, "t")
    # not blocked: there is no escalation to own
    error = refused(1, "assign-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--owner-agent-id",
                    "alice", "--reason", "yours")
    assert error["code"] == "CONFLICT" and error["details"]["status"] == "active"

    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck")
    error = refused(1, "reassign-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--owner-agent-id",
                    "bob", "--reason", "no one owns it yet")
    assert error["code"] == "CONFLICT"
    assert rows(db, "SELECT owner_agent_id FROM escalations WHERE thread_id = ?", (thread_id,))[0][
        "owner_agent_id"] is None

    assigned = ok("assign-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--owner-agent-id", "alice",
                  "--reason", "alice knows auth", "--actor", "human:ops")
    assert assigned["owner_agent_id"] == "alice"
    assert ok("get-escalation-owner", "--db", str(db), "--thread-id", thread_id)["owner_agent_id"] == "alice"

    error = refused(1, "assign-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--owner-agent-id",
                    "bob", "--reason", "mine now", "--actor", "human:ops")
    assert error["code"] == "CONFLICT"
    assert error["details"]["owner_agent_id"] == "alice"  # the current owner, so the operator knows whom to ask
    assert ok("get-escalation-owner", "--db", str(db), "--thread-id", thread_id)["owner_agent_id"] == "alice"

    moved = ok("reassign-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--owner-agent-id", "bob",
               "--reason", "alice is away", "--actor", "human:ops")
    assert moved["owner_agent_id"] == "bob"
    owner = ok("get-escalation-owner", "--db", str(db), "--thread-id", thread_id)
    assert owner["owner_agent_id"] == "bob" and owner["status"] == "blocked"

    assigns = audit_rows(db, operation="assign_escalation_owner")
    assert [e["outcome"] for e in assigns] == ["refused", "ok", "refused"]
    assert assigns[1]["details"]["owner_before"] is None and assigns[1]["details"]["owner_after"] == "alice"
    reassigns = audit_rows(db, operation="reassign_escalation_owner")
    assert [e["outcome"] for e in reassigns] == ["refused", "ok"]
    assert (reassigns[1]["details"]["owner_before"], reassigns[1]["details"]["owner_after"]) == ("alice", "bob")
    assert all(e["actor_role"] == "operator" and e["thread_id"] == thread_id for e in assigns + reassigns)
    assert reassigns[1]["reason"] == "alice is away"


@pytest.mark.parametrize("status", ["active", "resolved"])
def test_unblock_refuses_a_thread_that_is_not_blocked(db, status):
    """`unblock-thread` is blocked -> active only: it neither reopens a resolved thread nor "succeeds" on an active
    one; the refusal exits 1 with a typed error, changes nothing and is audited."""
    [thread_id] = seed_threads(db, "t")
    if status == "resolved":
        with services(db) as parts:
            thread_service.update_thread_status(parts.bridge, COORD, UpdateThreadStatusInput(
                thread_id=thread_id, status="resolved", reason="all fixed"))
    messages_before = rows(db, "SELECT * FROM messages WHERE thread_id = ?", (thread_id,))
    error = refused(1, "unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason",
                    "human_override: go", "--actor", "human:ops")
    assert error["code"] == "INVALID_THREAD_TRANSITION"
    assert thread_row(db, thread_id)["status"] == status
    assert rows(db, "SELECT * FROM messages WHERE thread_id = ?", (thread_id,)) == messages_before
    [event] = audit_rows(db, operation="unblock_thread")
    assert (event["outcome"], event["reason"], event["actor"], event["thread_id"]) == (
        "refused", "INVALID_THREAD_TRANSITION", "human:ops", thread_id)


def test_escalating_a_closed_thread_is_an_invalid_transition(db):
    [thread_id] = seed_threads(db, "t")
    ok("override-close-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "human_override: done")
    error = refused(1, "escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "reopen?",
                    "--actor", "human:ops")
    assert error["code"] == "INVALID_THREAD_TRANSITION"
    assert thread_row(db, thread_id)["status"] == "closed"
    assert rows(db, "SELECT * FROM escalations WHERE thread_id = ?", (thread_id,)) == []
    [event] = audit_rows(db, operation="escalate_thread")
    assert (event["outcome"], event["actor"], event["thread_id"]) == ("refused", "human:ops", thread_id)
    assert event["reason"] == "INVALID_THREAD_TRANSITION"
    # closed is terminal: no way back to active either
    assert refused(1, "unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason",
                   "human_override: again")["code"] == "INVALID_THREAD_TRANSITION"


def test_unknown_thread_exits_3_for_every_thread_command(db):
    seed_threads(db, "exists")
    for command in OPERATOR_COMMANDS_ON_A_THREAD:
        error = refused(3, command[0], "--db", str(db), "--thread-id", "thr_nope", *command[1:])
        assert error["code"] == "NOT_FOUND", command
    # the five mutations audit their refusal (reason NOT_FOUND); the two reads write nothing
    assert [(e["operation"], e["outcome"], e["reason"], e["actor_role"]) for e in audit_rows(db)
            if e["thread_id"] == "thr_nope"] == [
        (operation, "refused", "NOT_FOUND", "operator") for operation in (
            "escalate_thread", "assign_escalation_owner", "reassign_escalation_owner", "unblock_thread",
            "override_close_thread")]
    assert [r["status"] for r in rows(db, "SELECT status FROM threads")] == ["active"]
    assert rows(db, "SELECT COUNT(*) AS n FROM escalations")[0]["n"] == 0


def test_a_thread_of_another_workspace_is_not_found(db):
    [thread_id] = seed_threads(db, "default-ws thread")
    assert refused(3, "inspect-thread", "--db", str(db), "--workspace", "team", "--thread-id",
                   thread_id)["code"] == "NOT_FOUND"
    assert refused(3, "escalate-thread", "--db", str(db), "--workspace", "team", "--thread-id", thread_id,
                   "--reason", "x")["code"] == "NOT_FOUND"
    assert thread_row(db, thread_id)["status"] == "active"
    assert ok("threads", "--db", str(db), "--workspace", "team")["threads"] == []


# ------------------------------------------------------------------------------------------------- listings
def test_threads_lists_and_filters_by_status(db):
    active, blocked, closed = seed_threads(db, "still active", "waiting on a human", "done")
    ok("escalate-thread", "--db", str(db), "--thread-id", blocked, "--reason", "stuck", "--owner-agent-id", "alice")
    ok("override-close-thread", "--db", str(db), "--thread-id", closed, "--reason", "human_override: done")

    listed = ok("threads", "--db", str(db), "--status", "blocked")
    assert [t["thread_id"] for t in listed["threads"]] == [blocked]
    assert listed["threads"][0]["status"] == "blocked"
    assert listed["threads"][0]["escalation"]["owner_agent_id"] == "alice"
    everything = ok("threads", "--db", str(db))
    assert {t["thread_id"]: t["status"] for t in everything["threads"]} == {
        active: "active", blocked: "blocked", closed: "closed"}

    text = bridge("threads", "--db", str(db), "--status", "blocked")
    assert text.exit_code == 0, text.stderr
    assert blocked in text.stdout and active not in text.stdout and closed not in text.stdout
    assert "thread_id" in text.stdout.splitlines()[0] and "alice" in text.stdout

    assert bridge("threads", "--db", str(db), "--status", "sleeping").exit_code == 2


def test_audit_filters_by_thread(db):
    first, second = seed_threads(db, "one", "two")
    ok("escalate-thread", "--db", str(db), "--thread-id", first, "--reason", "stuck one", "--actor", "human:ops")
    ok("escalate-thread", "--db", str(db), "--thread-id", second, "--reason", "stuck two")

    events = ok("audit", "--db", str(db), "--thread-id", first)["events"]
    assert events and all(e["thread_id"] == first for e in events)
    assert [e["operation"] for e in events] == ["create_thread", "escalate_thread"]
    escalation = events[-1]
    assert (escalation["actor"], escalation["actor_role"], escalation["reason"]) == ("human:ops", "operator",
                                                                                      "stuck one")
    assert escalation["details"]["before"] == "active" and escalation["details"]["after"] == "blocked"

    everything = ok("audit", "--db", str(db))["events"]
    assert {e["thread_id"] for e in everything} >= {first, second}
    ids = [e["audit_id"] for e in everything]
    assert ids == sorted(ids)

    text = bridge("audit", "--db", str(db), "--thread-id", second)
    assert text.exit_code == 0 and "operation" in text.stdout.splitlines()[0]
    assert "stuck two" in text.stdout and "stuck one" not in text.stdout


# ------------------------------------------------------------------------------------------------- freeze
def test_operators_keep_working_through_a_freeze(db):
    [thread_id] = seed_threads(db, "t")
    frozen = ok("freeze", "--db", str(db), "--all", "--reason", "incident 42", "--actor", "human:ops")
    assert frozen["frozen"] is True
    with services(db) as parts:  # the freeze is real: an agent's write is refused
        with pytest.raises(Unavailable) as caught:
            post_as(parts, as_agent("alice"), thread_id, "anyone there?")
        assert caught.value.details["reason"] == "frozen"

    base = ("--db", str(db), "--thread-id", thread_id, "--actor", "human:ops")
    assert ok("escalate-thread", *base, "--reason", "stuck")["status"] == "blocked"
    assert ok("assign-escalation-owner", *base, "--owner-agent-id", "alice", "--reason", "r")["owner_agent_id"] \
        == "alice"
    assert ok("reassign-escalation-owner", *base, "--owner-agent-id", "bob", "--reason", "r")["owner_agent_id"] \
        == "bob"
    assert ok("unblock-thread", *base, "--reason", "human_override: fixed")["status"] == "active"
    assert ok("override-close-thread", *base, "--reason", "human_override: done")["status"] == "closed"
    assert ok("inspect-thread", "--db", str(db), "--thread-id", thread_id)["thread"]["status"] == "closed"

    lifted = ok("unfreeze", "--db", str(db), "--reason", "incident 42 over", "--actor", "human:ops")
    assert lifted["frozen"] is False
    [freeze] = audit_rows(db, operation="freeze")
    [unfreeze] = audit_rows(db, operation="unfreeze")
    assert (freeze["actor"], freeze["actor_role"], freeze["reason"]) == ("human:ops", "operator", "incident 42")
    assert freeze["details"]["before"] is None and freeze["details"]["after"] == "all"
    assert unfreeze["details"]["before"] == "all" and unfreeze["details"]["after"] is None
    with services(db) as parts:
        fresh = create_thread(parts, COORD, ("alice", "bob"), "review")
        assert post_as(parts, as_agent("alice"), fresh, "back to work")["seq"] == 1


# ------------------------------------------------------------------------------------------------- exit codes
def test_usage_errors_exit_2(db):
    [thread_id] = seed_threads(db, "t")
    unknown_option = run_bridge("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "r",
                                "--colour", "red")
    assert unknown_option.returncode == 2 and unknown_option.stdout == ""
    assert "--colour" in unknown_option.stderr
    missing = bridge("unblock-thread", "--db", str(db), "--thread-id", thread_id)
    assert missing.exit_code == 2 and "--reason" in missing.stderr
    assert bridge("frobnicate-thread", "--db", str(db)).exit_code == 2
    assert bridge("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "r", "--json",
                  "--owner", "alice").exit_code == 2
    assert thread_row(db, thread_id)["status"] == "active"
    assert audit_rows(db, operation="escalate_thread") == [] and audit_rows(db, operation="unblock_thread") == []


def test_exit_codes_and_stderr_json_as_real_processes(db):
    [thread_id] = seed_threads(db, "t")
    ok("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck", "--owner-agent-id", "alice")

    not_found = run_bridge("inspect-thread", "--db", str(db), "--thread-id", "thr_missing", "--json")
    assert not_found.returncode == 3 and not_found.stdout == ""
    assert json.loads(not_found.stderr)["error"]["code"] == "NOT_FOUND"

    conflict = run_bridge("assign-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--owner-agent-id",
                          "bob", "--reason", "r", "--json")
    assert conflict.returncode == 1 and conflict.stdout == ""
    error = json.loads(conflict.stderr)["error"]
    assert error["code"] == "CONFLICT" and error["details"]["owner_agent_id"] == "alice"

    owner_rule = run_bridge("unblock-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "r")
    assert owner_rule.returncode == 1 and owner_rule.stdout == "" and "FORBIDDEN" in owner_rule.stderr
    assert "Traceback" not in owner_rule.stderr

    success = run_bridge("get-escalation-owner", "--db", str(db), "--thread-id", thread_id, "--json")
    assert success.returncode == 0 and json.loads(success.stdout)["owner_agent_id"] == "alice"


def test_database_path_that_cannot_exist_exits_4(tmp_path):
    (tmp_path / "not-a-dir").write_text("a file, not a directory")
    db = tmp_path / "not-a-dir" / "bridge.db"
    proc = run_bridge("threads", "--db", str(db), "--json")
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert json.loads(proc.stderr)["error"]["code"] == "UNAVAILABLE"
    plain = bridge("escalate-thread", "--db", str(db), "--thread-id", "thr_x", "--reason", "r")
    assert plain.exit_code == 4 and plain.stdout == "" and "UNAVAILABLE" in plain.stderr


@pytest.mark.sqlite_only
def test_a_held_write_lock_makes_mutations_exit_4_and_write_nothing(db):
    [thread_id] = seed_threads(db, "t")
    audit_before = audit_rows(db)
    holder = apsw.Connection(str(db))
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        proc = run_bridge("escalate-thread", "--db", str(db), "--thread-id", thread_id, "--reason", "stuck",
                          "--json", env={"BRIDGE_BUSY_TIMEOUT": "200ms"})
        assert time.monotonic() - started < 30
        assert proc.returncode == 4, (proc.stdout, proc.stderr)
        assert proc.stdout == "" and json.loads(proc.stderr)["error"]["code"] == "UNAVAILABLE"
        # reads do not need the write lock (WAL): an operator can still look while a writer is stuck
        peek = bridge("inspect-thread", "--db", str(db), "--thread-id", thread_id, "--json",
                      env={"BRIDGE_BUSY_TIMEOUT": "200ms"})
        assert peek.exit_code == 0, peek.stderr
        assert json.loads(peek.stdout)["thread"]["status"] == "active"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert thread_row(db, thread_id)["status"] == "active"
    assert audit_rows(db) == audit_before


@pytest.mark.sqlite_only
def test_maintenance_under_a_held_write_lock(db):
    [thread_id] = seed_threads(db, "t")
    env = {"BRIDGE_BUSY_TIMEOUT": "200ms"}
    holder = apsw.Connection(str(db))
    holder.execute("BEGIN IMMEDIATE")
    try:
        for command in (("db", "vacuum"), ("freeze", "--all", "--reason", "r"), ("unfreeze", "--reason", "r")):
            result = bridge(*command, "--db", str(db), "--json", env=env)
            assert result.exit_code == 4, (command, result.stdout, result.stderr)
            assert result.stdout == "" and json.loads(result.stderr)["error"]["code"] == "UNAVAILABLE"
        check = bridge("db", "check", "--db", str(db), "--json", env=env)  # read-only: works beside a writer
        assert check.exit_code == 0 and json.loads(check.stdout)["ok"] is True
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert audit_rows(db, operation="freeze") == [] and audit_rows(db, operation="unfreeze") == []
    with services(db) as parts:
        assert post_as(parts, as_agent("bob"), thread_id, "not frozen")["seq"] == 2


# ------------------------------------------------------------------------------------------------- db commands
def test_db_migrate_creates_a_current_schema(tmp_path):
    db = tmp_path / "fresh.db"
    out = ok("db", "migrate", "--db", str(db))
    assert out["schema_version"] == latest_version() == out["latest"]
    assert rows(db, "PRAGMA user_version")[0]["user_version"] == latest_version()
    assert ok("db", "migrate", "--db", str(db))["schema_version"] == latest_version()  # idempotent


def test_a_database_newer_than_the_code_is_refused(db):
    seed_threads(db, "t")
    with reading(db) as conn:
        record_version(conn, latest_version() + 1)
    error = refused(4, "threads", "--db", str(db))
    assert error["code"] == "UNAVAILABLE" and "newer" in error["message"]
    with reading(db) as conn:
        assert recorded_version(conn) == latest_version() + 1  # left as it was


def test_db_check_passes_on_a_healthy_database_and_fails_on_a_seq_gap(db):
    [thread_id] = seed_threads(db, "t")
    with services(db) as parts:
        for n in range(3):
            post_as(parts, as_agent("bob"), thread_id, f"message {n}")
    healthy = ok("db", "check", "--db", str(db))
    assert healthy["ok"] is True and healthy["problems"] == []

    with reading(db) as conn:
        conn.execute("DELETE FROM messages WHERE thread_id = ? AND seq = 2", (thread_id,))
    broken = bridge("db", "check", "--db", str(db), "--json")
    assert broken.exit_code == 1, broken.stdout
    verdict = json.loads(broken.stdout)
    assert verdict["ok"] is False
    assert [p["check"] for p in verdict["problems"]] == ["gapless_seqs"]
    proc = run_bridge("db", "check", "--db", str(db))
    assert proc.returncode == 1 and "gapless_seqs" in proc.stdout + proc.stderr


def test_db_check_fails_on_a_blocked_thread_without_an_escalation(db):
    [thread_id] = seed_threads(db, "t")
    with reading(db) as conn:
        conn.execute("UPDATE threads SET status = 'blocked' WHERE thread_id = ?", (thread_id,))
    result = bridge("db", "check", "--db", str(db), "--json")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False
    assert verdict["problems"] == [{"check": "blocked_has_open_escalation",
                                    "found": [{"thread_id": thread_id, "status": "blocked"}]}]


def test_db_check_fails_cleanly_on_files_that_are_not_bridge_databases(tmp_path):
    foreign = tmp_path / "foreign.db"
    conn = apsw.Connection(str(foreign))
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database, just text " * 200)
    for path, failing in ((foreign, "schema_version"), (garbage, "integrity")):
        result = bridge("db", "check", "--db", str(path), "--json")
        assert result.exit_code == 1, (path, result.stdout, result.stderr)
        verdict = json.loads(result.stdout)
        assert verdict["ok"] is False
        assert [p["check"] for p in verdict["problems"]] == [failing], verdict
    assert rows(foreign, "SELECT name FROM sqlite_master") == [{"name": "notes"}]  # not migrated by a check
    assert garbage.read_bytes() == b"this is not an SQLite database, just text " * 200


@pytest.mark.sqlite_only
def test_db_backup_during_writes_is_consistent_and_holds_every_acknowledged_message(tmp_path, db):
    [thread_id] = seed_threads(db, "busy")
    acknowledged: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            with services(db) as parts:
                n = 0
                while not stop.is_set():
                    acknowledged.append(post_as(parts, as_agent("alice"), thread_id, f"write {n}")["message_id"])
                    n += 1
        except BaseException as exc:  # surfaced below: a thread's exception must not vanish
            failures.append(exc)

    worker = threading.Thread(target=writer, name="test-writer")
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while len(acknowledged) < 50 and time.monotonic() < deadline and not failures:
            time.sleep(0.01)
        before_backup = list(acknowledged)
        out = tmp_path / "backup.db"
        proc = run_bridge("db", "backup", "--db", str(db), "--out", str(out), "--json", "--actor", "human:ops")
        during = len(acknowledged) - len(before_backup)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not failures, failures
    assert len(before_backup) >= 50 and during > 0  # the backup ran while messages were being written
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["backup"], summary["bytes"]) == (str(out), out.stat().st_size)

    checked = ok("db", "check", "--db", str(out))
    assert checked["ok"] is True
    saved = {r["message_id"] for r in rows(out, "SELECT message_id FROM messages")}
    assert set(before_backup) <= saved
    [event] = audit_rows(db, operation="db_backup")
    assert event["actor"] == "human:ops" and event["actor_role"] == "operator"

    # a backup never overwrites a file
    original = out.read_bytes()
    again = run_bridge("db", "backup", "--db", str(db), "--out", str(out), "--json")
    assert again.returncode == 1 and again.stdout == ""
    assert json.loads(again.stderr)["error"]["code"] == "CONFLICT"
    assert out.read_bytes() == original
    assert len(audit_rows(db, operation="db_backup")) == 1


@pytest.mark.sqlite_only
def test_db_backup_into_a_missing_directory_is_a_usage_error(tmp_path, db):
    seed_threads(db, "t")
    error = refused(2, "db", "backup", "--db", str(db), "--out", str(tmp_path / "no" / "such" / "dir.db"))
    assert error["code"] == "INVALID_ARGUMENT"
    assert not (tmp_path / "no").exists()
    assert audit_rows(db, operation="db_backup") == []


@pytest.mark.sqlite_only
def test_db_restore_needs_yes_and_restores_the_backup_content(tmp_path, db):
    [kept] = seed_threads(db, "before the backup")
    backup = tmp_path / "snap.db"
    ok("db", "backup", "--db", str(db), "--out", str(backup))
    [later] = seed_threads(db, "after the backup")

    refusal = refused(2, "db", "restore", "--db", str(db), "--from", str(backup))
    assert refusal["code"] == "INVALID_ARGUMENT" and "--yes" in refusal["message"]
    assert {r["thread_id"] for r in rows(db, "SELECT thread_id FROM threads")} == {kept, later}

    out = ok("db", "restore", "--db", str(db), "--from", str(backup), "--yes", "--actor", "human:ops")
    assert (out["database"], out["restored_from"], out["check"]) == (str(db), str(backup), True)
    assert {r["thread_id"] for r in rows(db, "SELECT thread_id FROM threads")} == {kept}
    assert [t["thread_id"] for t in ok("threads", "--db", str(db))["threads"]] == [kept]
    assert ok("db", "check", "--db", str(db))["ok"] is True
    [event] = audit_rows(db, operation="db_restore")
    assert event["actor"] == "human:ops" and event["actor_role"] == "operator"
    # the restored database is fully usable by the services
    with services(db) as parts:
        assert post_as(parts, as_agent("bob"), kept, "after restore")["seq"] == 2


@pytest.mark.sqlite_only
def test_db_restore_refuses_a_broken_backup_and_keeps_the_database(tmp_path, db):
    [thread_id] = seed_threads(db, "t")
    with services(db) as parts:
        post_as(parts, as_agent("bob"), thread_id, "two")
        post_as(parts, as_agent("bob"), thread_id, "three")
    backup = tmp_path / "bad.db"
    ok("db", "backup", "--db", str(db), "--out", str(backup))
    conn = apsw.Connection(str(backup))
    conn.execute("DELETE FROM messages WHERE seq = 2")
    conn.close()
    [other] = seed_threads(db, "only here")
    before = {table: rows(db, f"SELECT * FROM {table} ORDER BY rowid") for table in ("threads", "messages")}
    error = refused(2, "db", "restore", "--db", str(db), "--from", str(backup), "--yes")
    assert error["code"] == "INVALID_ARGUMENT" and "gapless_seqs" in error["message"]
    assert {table: rows(db, f"SELECT * FROM {table} ORDER BY rowid") for table in before} == before
    assert {r["thread_id"] for r in rows(db, "SELECT thread_id FROM threads")} == {thread_id, other}


@pytest.mark.sqlite_only
def test_db_vacuum_keeps_the_content(db):
    [thread_id] = seed_threads(db, "t")
    with services(db) as parts:
        for n in range(20):
            post_as(parts, as_agent("bob"), thread_id, "x" * 2000 + str(n))
    out = ok("db", "vacuum", "--db", str(db))
    assert (out["database"], out["bytes_after"]) == (str(db), Path(db).stat().st_size)
    assert ok("db", "check", "--db", str(db))["ok"] is True
    assert thread_row(db, thread_id)["latest_seq"] == 21
    assert len(rows(db, "SELECT 1 FROM messages WHERE thread_id = ?", (thread_id,))) == 21


# ------------------------------------------------------------------------------------------------- doctor
@pytest.mark.sqlite_only  # the key file is SQLite's home of the key (PostgreSQL keeps it: tests/test_signing_key_homes)
def test_doctor_passes_on_a_healthy_setup_and_fails_on_a_readable_key(tmp_path, db):
    seed_threads(db, "t")
    key = Settings.load({"db": str(db)}, env={}).data_dir / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    port = str(unused_port())

    healthy = bridge("doctor", "--db", str(db), "--port", port, "--json")
    assert healthy.exit_code == 0, healthy.stdout
    doc = json.loads(healthy.stdout)
    assert doc["ok"] is True
    checks = {c["check"]: c for c in doc["checks"]}
    assert {"python", "database", "signing key", "port"} <= set(checks)
    assert all({"ok", "detail", "required"} <= set(c) for c in doc["checks"])
    assert checks["signing key"]["ok"] is True and checks["database"]["ok"] is True

    key.chmod(0o644)
    sick = bridge("doctor", "--db", str(db), "--port", port, "--json")
    assert sick.exit_code == 1
    doc = json.loads(sick.stdout)
    assert doc["ok"] is False
    failing = [c["check"] for c in doc["checks"] if not c["ok"] and c["required"]]
    assert failing == ["signing key"]
    text = bridge("doctor", "--db", str(db), "--port", port)
    assert text.exit_code == 1 and "signing key" in text.stdout


def test_doctor_checks_every_runtime_dependency_the_project_declares(tmp_path, db):
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in declared}
    doc = json.loads(bridge("doctor", "--db", str(db), "--port", str(unused_port()), "--json").stdout)
    checked = {c["check"].removeprefix("package ").lower() for c in doc["checks"] if c["check"].startswith("package ")}
    assert checked == names


def test_doctor_fails_on_a_broken_database(db):
    [thread_id] = seed_threads(db, "t")
    with services(db) as parts:
        post_as(parts, as_agent("bob"), thread_id, "two")
    with reading(db) as conn:
        conn.execute("DELETE FROM messages WHERE seq = 1")
    result = bridge("doctor", "--db", str(db), "--port", str(unused_port()), "--json")
    assert result.exit_code == 1
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["database"]["ok"] is False


def test_doctor_fails_when_the_database_cannot_be_created(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    result = bridge("doctor", "--db", str(tmp_path / "a-file" / "bridge.db"), "--port", str(unused_port()), "--json")
    assert result.exit_code == 1, result.stdout
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["database"]["ok"] is False and checks["database"]["required"] is True


# ------------------------------------------------------------------------------------------------- with a server
def test_operator_commands_share_the_database_with_a_running_server(live_server, make_token):
    bridge_core = live_server.parts.bridge
    db = bridge_core.settings.db
    thread_id = thread_service.create_thread(bridge_core, COORD, CreateThreadInput(
        title="served", type="incident", participants=["alice"]))["thread_id"]

    proc = run_bridge("escalate-thread", "--db", db, "--thread-id", thread_id, "--reason", "pager", "--owner-agent-id",
                      "alice", "--json", "--actor", "human:oncall")
    assert proc.returncode == 0, proc.stderr
    token = make_token("coord", "coordinator")
    seen = live_server.client.ok("get_thread", token, thread_id=thread_id)
    assert seen["status"] == "blocked" and seen["escalation"]["owner_agent_id"] == "alice"
    # the coordinator is not the owner: the server applies the owner rule to the operator's escalation
    reply = live_server.client.call("update_thread_status", token, thread_id=thread_id, status="active",
                                    reason="looks fine")
    assert reply.status == 403 and reply.code == "FORBIDDEN"
    assert thread_service.get_thread(bridge_core, COORD, GetThreadInput(thread_id=thread_id))["status"] == "blocked"
