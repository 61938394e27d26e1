"""Authorization over real HTTP (SPEC §3 and §4): the role x command matrix, membership, workspaces, identity hints.

The expected outcomes below are written from the SPEC's role table, not from the code:

| Operation                                         | participant     | coordinator | auditor                    |
| read threads/messages/summaries, ack, heartbeat   | own threads     | any         | any (read; ack/heartbeat)  |
| post messages                                     | own threads     | yes         | no                         |
| create threads, manage participants, change status,| no              | yes         | no                         |
|   trigger participants                            |                 |             |                            |

The commands come from the command registry (`bridge.services.commands.COMMANDS`): a new command without a row in
MATRIX below fails `test_role_matrix` and `test_matrix_covers_every_command`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bridge.domain.vocabulary import TOKEN_ROLES
from bridge.services.commands import COMMANDS
from bridge.store.rows import table_names
from bridge.testing.database import audit_rows

COORD, MEMBER, OUTSIDER, AUDITOR = "coord", "alice", "bob", "aud"

# The four callers of the matrix: (agent id, token role).
CALLERS = {
    "participant-member": (MEMBER, "participant"),
    "participant-non-member": (OUTSIDER, "participant"),
    "coordinator": (COORD, "coordinator"),
    "auditor": (AUDITOR, "auditor"),
}

OK = 200
ROLE = "role"  # 403 FORBIDDEN: the caller's role may not do this at all
MEMBERSHIP = "membership"  # 403 FORBIDDEN: the caller is not a participant of the thread

# command -> (participant-member, participant-non-member, coordinator, auditor)
MATRIX: dict[str, tuple[Any, Any, Any, Any]] = {
    "create_thread":        (ROLE,  ROLE,       OK, ROLE),
    "get_thread":           (OK,    MEMBERSHIP, OK, OK),
    "list_threads":         (OK,    OK,         OK, OK),  # participants: filtered to their own threads
    "update_participants":  (ROLE,  ROLE,       OK, ROLE),
    "update_thread_status": (ROLE,  ROLE,       OK, ROLE),
    "summarize_thread":     (OK,    MEMBERSHIP, OK, OK),
    "post_message":         (OK,    MEMBERSHIP, OK, ROLE),
    "read_messages":        (OK,    MEMBERSHIP, OK, OK),
    "ack_read":             (OK,    MEMBERSHIP, OK, OK),
    "inbox":                (OK,    OK,         OK, OK),  # about the caller's own threads only
    "heartbeat_session":    (OK,    OK,         OK, OK),  # about the caller's own session only
    "trigger_participant":  (ROLE,  ROLE,       OK, ROLE),
}
ROLE_ORDER = ("participant-member", "participant-non-member", "coordinator", "auditor")
# The reason a FORBIDDEN reports for each kind of refusal ("role not allowed" / "not a participant of the thread").
REASONS = {ROLE: "role_not_allowed", MEMBERSHIP: "not_participant"}


@dataclass
class World:
    api: Any
    tokens: dict[str, str]  # caller name -> token
    thread_id: str  # a thread listing MEMBER (and carol), not OUTSIDER, COORD or AUDITOR
    other_thread_id: str  # a thread listing OUTSIDER only


@pytest.fixture
def world(api, make_token) -> World:
    tokens = {name: make_token(agent, role) for name, (agent, role) in CALLERS.items()}
    coord = tokens["coordinator"]
    thread = api.ok("create_thread", coord, title="Matrix", type="workflow", participants=[MEMBER, "carol"])
    other = api.ok("create_thread", coord, title="Elsewhere", type="conversation", participants=[OUTSIDER])
    api.ok("post_message", coord, thread_id=thread["thread_id"], schema_version=1, kind="chat", body="first")
    return World(api, tokens, thread["thread_id"], other["thread_id"])


def payload_for(command: str, agent_id: str, thread_id: str) -> dict[str, Any]:
    """A valid payload for `command`: only authorization can make it fail."""
    return {
        "create_thread": {"title": "New", "type": "incident", "participants": [MEMBER]},
        "get_thread": {"thread_id": thread_id},
        "list_threads": {},
        "update_participants": {"thread_id": thread_id, "add": ["dave"]},
        "update_thread_status": {"thread_id": thread_id, "status": "blocked", "reason": "needs a human"},
        "summarize_thread": {"thread_id": thread_id},
        "post_message": {"thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": "hi"},
        "read_messages": {"thread_id": thread_id},
        "ack_read": {"thread_id": thread_id, "last_read_seq": 1},
        "inbox": {},
        "heartbeat_session": {"session_id": f"{agent_id}-s1", "runtime": "codex_cli", "status": "active",
                              "resumable": True},
        "trigger_participant": {"thread_id": thread_id, "target_agent_id": "carol", "reason": "your turn"},
    }[command]


def assert_forbidden(reply, reason: str) -> None:
    assert reply.status == 403, reply.body
    assert reply.code == "FORBIDDEN", reply.body
    assert reply.body["error"]["details"].get("reason") == reason, reply.body


def database_state(live_server) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the audit trail (a refusal adds its audit row and nothing else)."""
    def read(conn) -> dict[str, list[tuple[Any, ...]]]:
        tables = [name for name in table_names(conn) if name != "audit_events"]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}

    return live_server.parts.bridge.store.read(read)


# --------------------------------------------------------------------------------------------------- the matrix
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_role_matrix(live_server, world, command):
    """Every command of the registry, the four callers in turn, over HTTP; a refused call must leave the database
    exactly as it was (but for its audit row)."""
    assert command in MATRIX, f"{command} has no row in the authorization matrix of this test"
    wrong: list[str] = []
    for caller, expected in zip(ROLE_ORDER, MATRIX[command], strict=True):
        agent_id, _ = CALLERS[caller]
        before = database_state(live_server)
        reply = world.api.call(command, world.tokens[caller], payload_for(command, agent_id, world.thread_id))
        if expected == OK:
            if reply.status != 200:
                wrong.append(f"{caller}: expected 200, got {reply.status} {reply.body}")
            continue
        details = reply.body.get("error", {}).get("details", {}) if isinstance(reply.body, dict) else {}
        if (reply.status, reply.code, details.get("reason")) != (403, "FORBIDDEN", REASONS[expected]):
            wrong.append(f"{caller}: expected 403 FORBIDDEN {REASONS[expected]}, got {reply.status} {reply.body}")
        after = database_state(live_server)
        changed = sorted(t for t in before if before[t] != after.get(t))
        if changed:
            wrong.append(f"{caller}: a refused {command} changed the tables {changed}")
    assert not wrong, "\n".join(wrong)


def test_every_refusal_is_audited_once(live_server, world):
    """SPEC §3: every 403 writes an audit event with actor, operation, request id and reason (exactly one)."""
    refusals = [  # (caller, command, payload changes)
        ("participant-non-member", "get_thread", {}),
        ("participant-non-member", "post_message", {}),
        ("participant-member", "create_thread", {}),
        ("participant-member", "update_thread_status", {}),
        ("participant-member", "update_thread_status", {"status": "closed"}),
        ("participant-member", "post_message", {"sender_agent_id": "mallory"}),
        ("participant-member", "post_message", {"kind": "system"}),
        ("auditor", "update_thread_status", {}),
        ("auditor", "update_participants", {}),
        ("auditor", "post_message", {}),
        ("participant-member", "trigger_participant", {}),
        ("auditor", "trigger_participant", {}),
        ("coordinator", "list_threads", {"workspace_id": "elsewhere"}),
    ]
    for i, (caller, command, changes) in enumerate(refusals):
        agent_id, role = CALLERS[caller]
        request_id = f"req-refusal-{i}"
        payload = {**payload_for(command, agent_id, world.thread_id), **changes}
        reply = world.api.raw("POST", f"/v1/mcp/{command}", json=payload,
                              headers={"Authorization": f"Bearer {world.tokens[caller]}", "x-request-id": request_id})
        assert reply.status == 403, (caller, command, reply.body)
        found = audit_rows(live_server.parts, request_id=request_id)
        assert len(found) == 1, (caller, command, found)
        assert (found[0]["actor"], found[0]["actor_role"]) == (agent_id, role), found
        assert (found[0]["operation"], found[0]["outcome"]) == (command, "refused"), found
        assert found[0]["reason"], found  # why it was refused


# --------------------------------------------------------------------------------------------------- membership
def test_participants_list_only_their_threads(world):
    def ids(token: str, **filters: Any) -> set[str]:
        return {t["thread_id"] for t in world.api.ok("list_threads", token, **filters)["threads"]}

    both = {world.thread_id, world.other_thread_id}
    assert ids(world.tokens["participant-member"]) == {world.thread_id}
    assert ids(world.tokens["participant-non-member"]) == {world.other_thread_id}
    assert ids(world.tokens["coordinator"]) == both
    assert ids(world.tokens["auditor"]) == both
    # A participant filter naming someone else cannot widen a participant's view.
    assert ids(world.tokens["participant-non-member"], participant=MEMBER) == set()
    assert ids(world.tokens["coordinator"], participant=MEMBER) == {world.thread_id}


def test_participant_cannot_read_other_threads(world):
    for command in ("get_thread", "summarize_thread", "read_messages"):
        reply = world.api.call(command, world.tokens["participant-member"], {"thread_id": world.other_thread_id})
        assert_forbidden(reply, "not_participant")
    assert world.api.ok("get_thread", world.tokens["participant-non-member"],
                        thread_id=world.other_thread_id)["thread_id"] == world.other_thread_id


def test_participant_gains_and_loses_access_with_membership(world):
    coord, outsider = world.tokens["coordinator"], world.tokens["participant-non-member"]
    assert world.api.call("get_thread", outsider, {"thread_id": world.thread_id}).status == 403
    world.api.ok("update_participants", coord, thread_id=world.thread_id, add=[OUTSIDER])
    assert world.api.ok("get_thread", outsider, thread_id=world.thread_id)["thread_id"] == world.thread_id
    world.api.ok("post_message", outsider, thread_id=world.thread_id, schema_version=1, kind="chat", body="in")
    world.api.ok("update_participants", coord, thread_id=world.thread_id, remove=[OUTSIDER])
    assert_forbidden(world.api.call("get_thread", outsider, {"thread_id": world.thread_id}), "not_participant")
    assert_forbidden(world.api.call("post_message", outsider, {"thread_id": world.thread_id, "schema_version": 1,
                                                               "kind": "chat", "body": "out"}), "not_participant")


def test_inbox_shows_only_own_threads(world):
    """The thread has an unread message from the coordinator; only its participants see it in their inbox."""
    def inbox_ids(token: str) -> set[str]:
        return {t["thread_id"] for t in world.api.ok("inbox", token)["threads"]}

    assert inbox_ids(world.tokens["participant-member"]) == {world.thread_id}
    assert world.thread_id not in inbox_ids(world.tokens["participant-non-member"])


def test_auditor_cannot_post_any_kind(world):
    for kind, extra in (("chat", {}), ("event", {"metadata": {"event_type": "finding_reported"}}), ("system", {})):
        reply = world.api.call("post_message", world.tokens["auditor"],
                               {"thread_id": world.thread_id, "schema_version": 1, "kind": kind, "body": "x", **extra})
        assert reply.status == 403, (kind, reply.body)
        assert reply.code == "FORBIDDEN"


def test_system_kind_reserved_to_coordinators(world):
    body = {"thread_id": world.thread_id, "schema_version": 1, "kind": "system", "body": "I am the bridge"}
    reply = world.api.call("post_message", world.tokens["participant-member"], body)
    assert reply.status == 403 and reply.code == "FORBIDDEN", reply.body
    messages = world.api.ok("read_messages", world.tokens["coordinator"], thread_id=world.thread_id)["messages"]
    assert [m["body"] for m in messages] == ["first"]
    posted = world.api.ok("post_message", world.tokens["coordinator"], **body)
    assert posted["seq"] == 2
    # chat and event stay open to participants
    world.api.ok("post_message", world.tokens["participant-member"], thread_id=world.thread_id, schema_version=1,
                 kind="event", body="found it", metadata={"event_type": "finding_reported"})


# --------------------------------------------------------------------------------------------------- workspaces
def test_other_workspace_token_is_refused(world, make_token):
    token = make_token(COORD, "coordinator", workspace="elsewhere")
    for command in MATRIX:
        reply = world.api.call(command, token, payload_for(command, COORD, world.thread_id))
        assert (reply.status, reply.code) == (403, "WORKSPACE_MISMATCH"), (command, reply.body)


def test_other_workspace_token_is_audited(live_server, world, make_token):
    token = make_token("intruder", "coordinator", workspace="elsewhere")
    reply = world.api.raw("POST", "/v1/mcp/list_threads", json={},
                          headers={"Authorization": f"Bearer {token}", "x-request-id": "req-ws-1"})
    assert reply.code == "WORKSPACE_MISMATCH"
    found = audit_rows(live_server.parts, request_id="req-ws-1")
    assert len(found) == 1 and found[0]["outcome"] == "refused", found
    assert found[0]["actor"] == "intruder"


@pytest.mark.parametrize("caller", ["coordinator", "participant-member", "auditor"])
def test_workspace_hint_must_match(world, caller):
    agent_id, _ = CALLERS[caller]
    for command, expected in zip(MATRIX, (MATRIX[c][ROLE_ORDER.index(caller)] for c in MATRIX), strict=True):
        payload = payload_for(command, agent_id, world.thread_id)
        if command == "update_thread_status":
            payload["status"] = "active"  # a no-op, so the call can be repeated
        reply = world.api.call(command, world.tokens[caller], {**payload, "workspace_id": "elsewhere"})
        assert (reply.status, reply.code) == (403, "WORKSPACE_MISMATCH"), (command, reply.body)
        if command == "create_thread":
            payload["title"] = "New again"
        reply = world.api.call(command, world.tokens[caller], {**payload, "workspace_id": "default"})
        assert reply.status == (200 if expected == OK else 403), (command, reply.body)


# --------------------------------------------------------------------------------------------------- identity hints
# (command, caller, hint field, value equal to the claims)
HINTS: list[tuple[str, str, str, str]] = [
    ("create_thread", "coordinator", "created_by", COORD),
    ("post_message", "participant-member", "sender_agent_id", MEMBER),
    ("post_message", "participant-member", "sender_session_id", f"{MEMBER}-s1"),
    ("post_message", "coordinator", "sender_agent_id", COORD),
    ("read_messages", "participant-member", "agent_id", MEMBER),
    ("ack_read", "participant-member", "agent_id", MEMBER),
    ("inbox", "participant-member", "agent_id", MEMBER),
    ("heartbeat_session", "participant-member", "agent_id", MEMBER),
    ("heartbeat_session", "auditor", "agent_id", AUDITOR),
]


@pytest.mark.parametrize(("command", "caller", "field", "value"), HINTS, ids=[f"{c}-{f}-{r}" for c, r, f, _ in HINTS])
def test_identity_hints(world, command, caller, field, value):
    """A hint that differs from the claims is FORBIDDEN (claim_mismatch); one equal to the claims is accepted."""
    agent_id, _ = CALLERS[caller]
    payload = payload_for(command, agent_id, world.thread_id)
    reply = world.api.call(command, world.tokens[caller], {**payload, field: "mallory"})
    assert_forbidden(reply, "claim_mismatch")
    reply = world.api.call(command, world.tokens[caller], {**payload, field: value})
    assert reply.status == 200, reply.body


def test_stored_identity_comes_from_claims(world):
    coord, member = world.tokens["coordinator"], world.tokens["participant-member"]
    created = world.api.ok("create_thread", coord, title="Hinted", type="workflow", participants=[MEMBER],
                           created_by=COORD)
    assert world.api.ok("get_thread", coord, thread_id=created["thread_id"])["created_by"] == COORD
    world.api.ok("post_message", member, thread_id=world.thread_id, schema_version=1, kind="chat", body="mine",
                 sender_agent_id=MEMBER, sender_session_id=f"{MEMBER}-s1")
    last = world.api.ok("read_messages", coord, thread_id=world.thread_id)["messages"][-1]
    assert (last["sender_agent_id"], last["sender_session_id"]) == (MEMBER, f"{MEMBER}-s1")


def test_heartbeat_session_id_must_equal_token(world):
    reply = world.api.call("heartbeat_session", world.tokens["participant-member"],
                           {"session_id": "someone-elses-session", "runtime": "claude_code", "status": "idle",
                            "resumable": False})
    assert reply.status == 403, reply.body
    assert reply.code == "FORBIDDEN"
    assert reply.body["error"]["details"].get("reason") == "claim_mismatch"


def test_mismatched_post_writes_nothing(world):
    reply = world.api.call("post_message", world.tokens["participant-member"],
                           {"thread_id": world.thread_id, "schema_version": 1, "kind": "chat", "body": "spoof",
                            "sender_agent_id": COORD})
    assert_forbidden(reply, "claim_mismatch")
    messages = world.api.ok("read_messages", world.tokens["coordinator"], thread_id=world.thread_id)["messages"]
    assert [m["body"] for m in messages] == ["first"]


# --------------------------------------------------------------------------------------------------- unknown ids
THREAD_COMMANDS = sorted(name for name, c in COMMANDS.items() if "thread_id" in c.input.model_fields)


def test_unknown_thread_is_not_found(world):
    for command in THREAD_COMMANDS:
        payload = payload_for(command, COORD, "thr_does_not_exist")
        if command == "ack_read":
            payload["last_read_seq"] = 0
        reply = world.api.call(command, world.tokens["coordinator"], payload)
        assert (reply.status, reply.code) == (404, "NOT_FOUND"), (command, reply.body)
    for caller in ("participant-member", "auditor"):
        for command in ("get_thread", "summarize_thread", "read_messages"):
            reply = world.api.call(command, world.tokens[caller], {"thread_id": "thr_does_not_exist"})
            assert (reply.status, reply.code) == (404, "NOT_FOUND"), (caller, command, reply.body)


def test_matrix_covers_every_command_and_role():
    """The matrix is complete against the code's vocabularies: every registered command, every role."""
    assert sorted(MATRIX) == sorted(COMMANDS)
    assert {role for _, role in CALLERS.values()} == set(TOKEN_ROLES)
    assert all(len(row) == len(ROLE_ORDER) for row in MATRIX.values())
