"""Thread lifecycle and escalation over real HTTP (SPEC §5): the transition table, the owner rule, escalation
records, compare-and-set under concurrency, and the audit trail of every change and refusal.

The expected transitions are the contract's table, written out below as it stands (CONTRACT), not read from
`bridge.domain.lifecycle`: `test_transition_table` drives every (from, to) pair through `update_thread_status`
over HTTP and compares what the service did with the cell.
"""

from __future__ import annotations

import threading
from typing import Any

import apsw
import psycopg
import pytest
import requests
from helpers import new_thread

from bridge.domain import lifecycle
from bridge.store.rows import loads, rows
from bridge.testing.database import reading

# The contract, cell for cell ("no" = refused with INVALID_THREAD_TRANSITION; the owner rule is tested below).
CONTRACT = """
from \\ to | active   | blocked  | resolved | closed
active     | no-op    | escalate | resolve  | close
blocked    | unblock  | no-op    | no       | close
resolved   | reopen   | no       | no-op    | close
closed     | no       | no       | no       | no-op
"""
NOOP, REFUSED = "no-op", "no"
# The event type of the system message announcing each change.
ANNOUNCED = {"escalate": "thread_escalated", "resolve": "thread_resolved", "close": "thread_closed",
             "unblock": "thread_unblocked", "reopen": "thread_reopened"}


def _parse(grid: str) -> tuple[tuple[str, ...], dict[tuple[str, str], str]]:
    header, *lines = [[cell.strip() for cell in line.split("|")] for line in grid.strip().splitlines()]
    targets = tuple(header[1:])
    table = {(line[0], target): cell for line in lines for target, cell in zip(targets, line[1:], strict=True)}
    return targets, table


STATUSES, TABLE = _parse(CONTRACT)
CELLS = sorted(TABLE, key=lambda cell: (STATUSES.index(cell[0]), STATUSES.index(cell[1])))
# The way each starting status is reached from `active`.
SETUP_REASON = {"active": None, "blocked": "stuck on a review", "resolved": "all fixed", "closed": "done"}

COORD, MEMBER = "coord", "alice"


# --------------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def tokens(make_token) -> dict[str, str]:
    return {"coord": make_token(COORD, "coordinator"), "owner": make_token("owner", "coordinator"),
            "owner2": make_token("owner2", "coordinator"), "other": make_token("other-coord", "coordinator"),
            "member": make_token(MEMBER), "auditor": make_token("aud", "auditor")}


def thread_with_status(api, tokens, status: str = "active", *, owner: str | None = None) -> str:
    """A thread listing MEMBER, brought to `status` by the coordinator."""
    thread_id = new_thread(api, tokens["coord"], [MEMBER, "bob"], title="Lifecycle")
    if status != "active":
        extra = {"owner_agent_id": owner} if owner else {}
        api.ok("update_thread_status", tokens["coord"], thread_id=thread_id, status=status,
               reason=SETUP_REASON[status], **extra)
    assert thread(api, tokens, thread_id)["status"] == status
    return thread_id


def thread(api, tokens, thread_id: str) -> dict[str, Any]:
    return api.ok("get_thread", tokens["coord"], thread_id=thread_id)


def messages(api, tokens, thread_id: str) -> list[dict[str, Any]]:
    return api.ok("read_messages", tokens["coord"], thread_id=thread_id, limit=200)["messages"]


def set_status(api, token: str, thread_id: str, status: str, reason: str = "because", **extra: Any):
    return api.call("update_thread_status", token, {"thread_id": thread_id, "status": status, "reason": reason,
                                                    **extra})


def status_audits(live_server, thread_id: str) -> list[dict[str, Any]]:
    found = live_server.parts.bridge.store.read(lambda conn: rows(
        conn, "SELECT * FROM audit_events WHERE thread_id = ? AND operation = 'update_thread_status'"
              " ORDER BY audit_id", (thread_id,)))
    return [{**row, "details": loads(row["details"])} for row in found]


def escalation_rows(live_server, thread_id: str) -> list[dict[str, Any]]:
    return live_server.parts.bridge.store.read(lambda conn: rows(
        conn, "SELECT * FROM escalations WHERE thread_id = ? ORDER BY escalation_id", (thread_id,)))


def assert_error(reply, status: int, code: str, reason: str | None = None) -> None:
    assert (reply.status, reply.code) == (status, code), reply.body
    if reason is not None:
        assert reply.body["error"]["details"].get("reason") == reason, reply.body


# --------------------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize(("current", "target"), CELLS, ids=[f"{a}->{b}" for a, b in CELLS])
def test_transition_table(live_server, api, tokens, current, target):
    thread_id = thread_with_status(api, tokens, current)
    before_messages = messages(api, tokens, thread_id)
    before_audits = status_audits(live_server, thread_id)
    # From blocked, an override reason keeps the owner rule out of the way: this test is about the table.
    reason = "coordinator_override: table cell" if current == "blocked" else "table cell"
    reply = set_status(api, tokens["coord"], thread_id, target, reason)
    expected = TABLE[(current, target)]
    after_messages = messages(api, tokens, thread_id)
    new_audits = status_audits(live_server, thread_id)[len(before_audits):]
    assert len(new_audits) == 1, new_audits  # changes, no-ops and refusals are all audited

    if expected == REFUSED:
        assert_error(reply, 409, "INVALID_THREAD_TRANSITION")
        # the refusal names the targets the contract allows from here (changes only, not the no-op)
        allowed = {to for (frm, to), cell in TABLE.items() if frm == current and cell not in (NOOP, REFUSED)}
        assert set(reply.body["error"]["details"]["allowed"]) == allowed, reply.body
        assert thread(api, tokens, thread_id)["status"] == current
        assert after_messages == before_messages
        assert new_audits[0]["outcome"] == "refused"
        return

    assert reply.status == 200, reply.body
    assert reply.body["thread_id"] == thread_id
    assert reply.body["status"] == target
    assert thread(api, tokens, thread_id)["status"] == target
    assert new_audits[0]["outcome"] == "ok"
    assert new_audits[0]["actor"] == COORD
    if expected == NOOP:
        assert reply.body["changed"] is False
        assert after_messages == before_messages
        return
    assert reply.body["changed"] is True
    added = after_messages[len(before_messages):]
    assert len(added) == 1, added
    assert added[0]["kind"] == "system"
    assert added[0]["metadata"]["event_type"] == ANNOUNCED[expected]
    assert added[0]["seq"] == (before_messages[-1]["seq"] if before_messages else 0) + 1


def test_every_status_of_the_code_is_in_the_contract_table():
    """A status the code knows and the contract's table does not (or the reverse) fails here: the table above then
    no longer covers every pair the service can be asked for."""
    assert set(lifecycle.STATUSES) == set(STATUSES)
    assert set(TABLE) == {(a, b) for a in lifecycle.STATUSES for b in lifecycle.STATUSES}


def test_closed_is_terminal(api, tokens):
    thread_id = thread_with_status(api, tokens, "closed")
    for target in ("active", "blocked", "resolved"):
        for reason in ("reopen please", "human_override: reopen", "coordinator_override: reopen"):
            assert_error(set_status(api, tokens["coord"], thread_id, target, reason), 409,
                         "INVALID_THREAD_TRANSITION")
    assert thread(api, tokens, thread_id)["status"] == "closed"
    reply = set_status(api, tokens["coord"], thread_id, "closed", "again")
    assert reply.status == 200 and reply.body["changed"] is False, reply.body


def test_a_round_trip_announces_each_change_once_in_order(api, tokens):
    """active -> blocked -> active -> resolved -> active -> closed on one thread, each announced once, in order."""
    thread_id = thread_with_status(api, tokens)
    path = [("blocked", "thread_escalated"), ("active", "thread_unblocked"), ("resolved", "thread_resolved"),
            ("active", "thread_reopened"), ("closed", "thread_closed")]
    for target, _ in path:
        reply = set_status(api, tokens["coord"], thread_id, target, f"to {target}")
        assert reply.status == 200 and reply.body["changed"] is True, (target, reply.body)
    system = [m["metadata"]["event_type"] for m in messages(api, tokens, thread_id) if m["kind"] == "system"]
    assert system == [event for _, event in path]


# --------------------------------------------------------------------------------------------------- posting
def test_posting_follows_status(api, tokens):
    post = {"schema_version": 1, "kind": "chat", "body": "still here"}
    for status in ("active", "blocked", "resolved"):
        thread_id = thread_with_status(api, tokens, status)
        for who in ("member", "coord"):
            reply = api.call("post_message", tokens[who], {"thread_id": thread_id, **post})
            assert reply.status == 200, (status, who, reply.body)
            assert reply.body["thread_status"] == status
    thread_id = thread_with_status(api, tokens, "closed")
    before = messages(api, tokens, thread_id)
    for who in ("member", "coord"):
        assert_error(api.call("post_message", tokens[who], {"thread_id": thread_id, **post}), 409, "THREAD_CLOSED")
    assert messages(api, tokens, thread_id) == before
    # reads still work on a closed thread
    assert api.ok("read_messages", tokens["member"], thread_id=thread_id)["messages"] == before


# --------------------------------------------------------------------------------------------------- who may change
@pytest.mark.parametrize("current", ["active", "blocked", "resolved"])
def test_participant_cannot_change_status(live_server, api, tokens, current):
    thread_id = thread_with_status(api, tokens, current)
    before = len(status_audits(live_server, thread_id))
    assert_error(set_status(api, tokens["member"], thread_id, "closed", "human_override: I am done"), 403,
                 "FORBIDDEN", "worker_cannot_force_close")
    for target in STATUSES:
        if target == "closed":
            continue
        reply = set_status(api, tokens["member"], thread_id, target, "coordinator_override: let me")
        assert_error(reply, 403, "FORBIDDEN")
        assert reply.body["error"]["details"].get("reason") != "worker_cannot_force_close"
    assert thread(api, tokens, thread_id)["status"] == current
    refusals = status_audits(live_server, thread_id)[before:]
    assert len(refusals) == 4, refusals
    assert all(r["outcome"] == "refused" and r["actor"] == MEMBER for r in refusals)


def test_auditor_cannot_change_status(api, tokens):
    thread_id = thread_with_status(api, tokens)
    for target in ("blocked", "resolved", "closed"):
        assert_error(set_status(api, tokens["auditor"], thread_id, target), 403, "FORBIDDEN")
    assert thread(api, tokens, thread_id)["status"] == "active"


# --------------------------------------------------------------------------------------------------- escalation
def test_escalation_record_opens_and_closes(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens)
    assert thread(api, tokens, thread_id)["escalation"] is None
    reply = set_status(api, tokens["coord"], thread_id, "blocked", "reviewer and executor disagree",
                       owner_agent_id="owner")
    assert reply.status == 200 and reply.body["changed"] is True, reply.body

    escalation = thread(api, tokens, thread_id)["escalation"]
    assert escalation is not None
    assert escalation["owner_agent_id"] == "owner"
    assert escalation["reason"] == "reviewer and executor disagree"
    assert escalation["since"].endswith("Z") and "T" in escalation["since"]
    # participants see the escalation too
    assert api.ok("get_thread", tokens["member"], thread_id=thread_id)["escalation"] == escalation

    announced = messages(api, tokens, thread_id)[-1]
    assert announced["kind"] == "system"
    assert announced["metadata"]["event_type"] == "thread_escalated"

    records = escalation_rows(live_server, thread_id)
    assert len(records) == 1
    assert records[0]["closed_at"] is None
    assert records[0]["escalated_by"] == COORD
    assert records[0]["owner_agent_id"] == "owner"
    assert loads(records[0]["snapshot"])  # a summary snapshot of the thread

    api.ok("update_thread_status", tokens["owner"], thread_id=thread_id, status="active", reason="sorted out")
    assert thread(api, tokens, thread_id)["escalation"] is None
    records = escalation_rows(live_server, thread_id)
    assert len(records) == 1, "leaving blocked keeps the record for history"
    assert records[0]["closed_at"] is not None
    assert records[0]["reason"] == "reviewer and executor disagree"

    # a second escalation is a new record; the first stays
    api.ok("update_thread_status", tokens["coord"], thread_id=thread_id, status="blocked", reason="again")
    assert thread(api, tokens, thread_id)["escalation"]["reason"] == "again"
    assert thread(api, tokens, thread_id)["escalation"]["owner_agent_id"] is None
    records = escalation_rows(live_server, thread_id)
    assert [r["closed_at"] is None for r in records] == [False, True]


def test_closing_a_blocked_thread_closes_the_escalation(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens, "blocked")
    api.ok("update_thread_status", tokens["coord"], thread_id=thread_id, status="closed",
           reason="human_override: abandoned")
    assert thread(api, tokens, thread_id)["escalation"] is None
    (record,) = escalation_rows(live_server, thread_id)
    assert record["closed_at"] is not None


def test_escalation_appears_in_list_threads(api, tokens):
    thread_id = thread_with_status(api, tokens, "blocked", owner="owner")
    listed = {t["thread_id"]: t for t in api.ok("list_threads", tokens["coord"], status="blocked")["threads"]}
    assert listed[thread_id]["escalation"]["owner_agent_id"] == "owner"


# --------------------------------------------------------------------------------------------------- owner rule
@pytest.mark.parametrize("target", ["active", "closed"])
def test_owner_rule_with_owner(live_server, api, tokens, target):
    thread_id = thread_with_status(api, tokens, "blocked", owner="owner")
    before = len(status_audits(live_server, thread_id))
    # not the owner, no override (including look-alikes that do not start with a prefix)
    for who, reason in (("other", "I want to"), ("coord", "I created it"), ("other", "please human_override: x"),
                        ("other", "human_override without colon"), ("other", " coordinator_override: x")):
        reply = set_status(api, tokens[who], thread_id, target, reason)
        assert_error(reply, 403, "FORBIDDEN")
        assert thread(api, tokens, thread_id)["status"] == "blocked"
    refusals = status_audits(live_server, thread_id)[before:]
    assert len(refusals) == 5 and all(r["outcome"] == "refused" for r in refusals), refusals
    # the owner may, with any reason
    reply = set_status(api, tokens["owner"], thread_id, target, "owner decides")
    assert reply.status == 200 and reply.body["changed"] is True, reply.body
    assert thread(api, tokens, thread_id)["status"] == target


@pytest.mark.parametrize("prefix", ["human_override:", "coordinator_override:"])
@pytest.mark.parametrize("target", ["active", "closed"])
def test_override_prefix_beats_owner(api, tokens, prefix, target):
    thread_id = thread_with_status(api, tokens, "blocked", owner="owner")
    reply = set_status(api, tokens["other"], thread_id, target, f"{prefix} owner is away")
    assert reply.status == 200 and reply.body["changed"] is True, reply.body
    assert thread(api, tokens, thread_id)["status"] == target


def test_owner_rule_without_owner(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens, "blocked")
    assert thread(api, tokens, thread_id)["escalation"]["owner_agent_id"] is None
    before = len(status_audits(live_server, thread_id))
    assert_error(set_status(api, tokens["coord"], thread_id, "closed", "just close it"), 403, "FORBIDDEN")
    assert thread(api, tokens, thread_id)["status"] == "blocked"
    refusal = status_audits(live_server, thread_id)[before:]
    assert len(refusal) == 1 and refusal[0]["outcome"] == "refused"
    for prefix in ("human_override:", "coordinator_override:"):
        other = thread_with_status(api, tokens, "blocked")
        reply = set_status(api, tokens["other"], other, "closed", f"{prefix} dead end")
        assert reply.status == 200 and reply.body["changed"] is True, reply.body
    # unblocking without an owner needs no override, from any coordinator
    reply = set_status(api, tokens["other"], thread_id, "active", "carry on")
    assert reply.status == 200 and reply.body["changed"] is True, reply.body


def test_owner_assign_and_reassign(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens, "blocked")
    since = thread(api, tokens, thread_id)["escalation"]["since"]
    before = len(status_audits(live_server, thread_id))

    reply = set_status(api, tokens["coord"], thread_id, "blocked", "owner takes it", owner_agent_id="owner")
    assert reply.status == 200 and reply.body["status"] == "blocked", reply.body
    escalation = thread(api, tokens, thread_id)["escalation"]
    assert escalation["owner_agent_id"] == "owner"
    assert escalation["since"] == since  # same escalation, not a new one
    assert len(escalation_rows(live_server, thread_id)) == 1

    reply = set_status(api, tokens["coord"], thread_id, "blocked", "handing over", owner_agent_id="owner2")
    assert reply.status == 200 and reply.body["status"] == "blocked", reply.body
    assert reply.body["changed"] is False  # SPEC §5: a same-status request reports changed: false
    assert thread(api, tokens, thread_id)["escalation"]["owner_agent_id"] == "owner2"
    assert len(status_audits(live_server, thread_id)) - before == 2  # both owner changes audited

    # the old owner lost the right, the new one has it
    assert_error(set_status(api, tokens["owner"], thread_id, "active", "mine"), 403, "FORBIDDEN")
    reply = set_status(api, tokens["owner2"], thread_id, "active", "mine now")
    assert reply.status == 200 and reply.body["changed"] is True, reply.body


def test_participant_cannot_assign_owner(api, tokens):
    thread_id = thread_with_status(api, tokens, "blocked")
    assert_error(set_status(api, tokens["member"], thread_id, "blocked", "me", owner_agent_id=MEMBER), 403,
                 "FORBIDDEN")
    assert thread(api, tokens, thread_id)["escalation"]["owner_agent_id"] is None


# --------------------------------------------------------------------------------------------------- concurrency
def _post_status(url: str, token: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = requests.post(f"{url}/v1/mcp/update_thread_status", json=payload,
                          headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return reply.status_code, reply.json()


def _race(url: str, token: str, payloads: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    barrier = threading.Barrier(len(payloads))
    results: list[Any] = [None] * len(payloads)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = _post_status(url, token, payloads[i])

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert all(r is not None for r in results)
    return results


@pytest.mark.parametrize("attempt", range(3))
def test_compare_and_set_one_winner(live_server, api, tokens, attempt):
    thread_id = thread_with_status(api, tokens)
    payloads = [{"thread_id": thread_id, "status": target, "reason": f"race to {target}", "expected_status": "active"}
                for target in ("blocked", "resolved")]
    results = _race(live_server.url, tokens["coord"], payloads)
    winners = [(i, body) for i, (status, body) in enumerate(results) if status == 200]
    losers = [body for status, body in results if status != 200]
    assert len(winners) == 1, results
    assert winners[0][1]["changed"] is True
    assert len(losers) == 1 and losers[0]["error"]["code"] == "CONFLICT", results
    assert results[1 - winners[0][0]][0] == 409
    final = payloads[winners[0][0]]["status"]
    assert thread(api, tokens, thread_id)["status"] == final
    assert len([m for m in messages(api, tokens, thread_id) if m["kind"] == "system"]) == 1


def test_expected_status_mismatch_is_conflict(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens, "blocked")
    before = len(status_audits(live_server, thread_id))
    reply = set_status(api, tokens["coord"], thread_id, "closed", "human_override: stale view",
                       expected_status="active")
    assert_error(reply, 409, "CONFLICT")
    assert "blocked" in reply.body["error"]["details"].values()  # the current state is reported
    assert thread(api, tokens, thread_id)["status"] == "blocked"
    assert status_audits(live_server, thread_id)[before:][0]["outcome"] == "refused"
    reply = set_status(api, tokens["coord"], thread_id, "closed", "human_override: fresh view",
                       expected_status="blocked")
    assert reply.status == 200 and reply.body["changed"] is True, reply.body


def test_concurrent_same_target_changes_once(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens)
    payloads = [{"thread_id": thread_id, "status": "resolved", "reason": f"done {i}"} for i in range(8)]
    results = _race(live_server.url, tokens["coord"], payloads)
    changed = [body for status, body in results if status == 200 and body["changed"] is True]
    assert len(changed) == 1, results
    for status, body in results:
        assert (status == 200 and body["status"] == "resolved") or \
            (status == 409 and body["error"]["code"] == "CONFLICT"), (status, body)
    assert thread(api, tokens, thread_id)["status"] == "resolved"
    resolved = [m for m in messages(api, tokens, thread_id) if m["metadata"].get("event_type") == "thread_resolved"]
    assert len(resolved) == 1
    assert len(status_audits(live_server, thread_id)) == 8  # every request audited, winner or not


# --------------------------------------------------------------------------------------------------- audit trail
def test_status_changes_are_audited(live_server, api, tokens):
    thread_id = thread_with_status(api, tokens)
    api.ok("update_thread_status", tokens["coord"], thread_id=thread_id, status="blocked", reason="needs eyes")
    api.ok("update_thread_status", tokens["coord"], thread_id=thread_id, status="blocked", reason="still")
    assert_error(set_status(api, tokens["coord"], thread_id, "resolved", "skip ahead"), 409,
                 "INVALID_THREAD_TRANSITION")
    api.ok("update_thread_status", tokens["coord"], thread_id=thread_id, status="active", reason="unblocked")
    audits = status_audits(live_server, thread_id)
    assert [a["outcome"] for a in audits] == ["ok", "ok", "refused", "ok"]
    assert all(a["actor"] == COORD and a["actor_role"] == "coordinator" for a in audits)
    assert [a["reason"] for a in audits[:2]] == ["needs eyes", "still"]
    assert audits[0]["details"]["changed"] is True
    assert audits[1]["details"]["changed"] is False
    assert (audits[0]["details"]["before"], audits[0]["details"]["after"]) == ("active", "blocked")
    assert audits[3]["details"]["before"] == "blocked" and audits[3]["details"]["after"] == "active"
    assert all(a["request_id"] for a in audits)


def test_audit_trail_is_append_only(live_server, api, tokens):
    thread_with_status(api, tokens, "blocked")
    store = live_server.parts.bridge.store
    count = store.read(lambda conn: rows(conn, "SELECT COUNT(*) AS n FROM audit_events"))[0]["n"]
    assert count >= 2
    refused = (apsw.ConstraintError, psycopg.errors.IntegrityError)  # SQLite's RAISE(ABORT), PostgreSQL's trigger
    with reading(live_server.parts) as conn:
        with pytest.raises(refused, match="append-only"):
            conn.execute("UPDATE audit_events SET reason = 'rewritten'")
        with pytest.raises(refused, match="append-only"):
            conn.execute("DELETE FROM audit_events")
        with pytest.raises(refused, match="append-only"):
            conn.execute("DELETE FROM audit_events WHERE audit_id = (SELECT MAX(audit_id) FROM audit_events)")
    assert store.read(lambda conn: rows(conn, "SELECT COUNT(*) AS n FROM audit_events"))[0]["n"] == count
    reasons = store.read(lambda conn: rows(conn, "SELECT reason FROM audit_events"))
    assert all(r["reason"] != "rewritten" for r in reasons)
