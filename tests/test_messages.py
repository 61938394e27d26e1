"""Messages over real HTTP and the real store (SPEC §4, §6, §7, §8): idempotency, cursors, long-poll, acks, inbox,
addressing rules, the loop guard, the write quota, the write freeze and summaries.

Expected values come from the SPEC; every test uses a real database file in tmp_path.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from conftest import ApiClient, call_as
from helpers import new_thread, post

from bridge.domain.models import CreateThreadInput, GetThreadInput, PostMessageInput, UpdateThreadStatusInput
from bridge.http.server import make_server, shutdown
from bridge.services import messages as message_service
from bridge.services import threads as thread_service
from bridge.testing.database import query
from bridge.testing.processes import run_bridge
from bridge.wiring import Parts

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MESSAGE_FIELDS = {"message_id", "seq", "schema_version", "kind", "body", "metadata", "sender_agent_id",
                  "sender_session_id", "in_reply_to", "to", "to_role", "created_at"}
TEAM = ["rev", "exec"]  # the participants of a thread unless a test says otherwise


# ------------------------------------------------------------------------------------------------- helpers
def event(api: ApiClient, token: str, thread_id: str, event_type: str, body: str, **metadata: Any) -> dict[str, Any]:
    return post(api, token, thread_id, body, kind="event", metadata={"event_type": event_type, **metadata})


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads released together; return results in order (exceptions propagate)."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(timeout=10)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=60) for f in futures]


@contextlib.contextmanager
def clients(url: str, n: int) -> Iterator[list[ApiClient]]:
    """n independent HTTP clients (requests sessions are not thread-safe), closed afterwards."""
    made = [ApiClient(url) for _ in range(n)]
    try:
        yield made
    finally:
        for c in made:
            c.session.close()


@contextlib.contextmanager
def serving(parts: Parts) -> Iterator[ApiClient]:
    """A live waitress server for parts built with setting overrides (like the live_server fixture)."""
    server = make_server(parts, host="127.0.0.1", port=0)
    runner = threading.Thread(target=server.run, name="waitress-overrides", daemon=True)
    runner.start()
    client = ApiClient(f"http://127.0.0.1:{server.effective_port}")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.raw("GET", "/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.02)
        yield client
    finally:
        client.session.close()
        shutdown(server)
        runner.join(timeout=10)


def in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start fn in a thread; the dict gets `result` or `error`, and `done_at` (monotonic)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:  # surfaced by the test's assertions
            box["error"] = exc
        box["done_at"] = time.monotonic()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, box


# ------------------------------------------------------------------------------------------------- 1. idempotency
def test_post_replay_returns_original_without_new_row(api, make_token):
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    tid = new_thread(api, coord, TEAM)
    payload = {"thread_id": tid, "schema_version": 1, "kind": "event", "body": "fixed it",
               "metadata": {"event_type": "fix_pushed", "commit": "abc"}, "to": ["exec"], "idempotency_key": "k-1"}
    first = api.ok("post_message", rev, **payload)
    assert first["replayed"] is False and first["seq"] == 1
    again = api.ok("post_message", rev, **payload)
    assert again["replayed"] is True
    assert {k: again[k] for k in ("message_id", "seq", "created_at")} == \
           {k: first[k] for k in ("message_id", "seq", "created_at")}
    read = api.ok("read_messages", coord, thread_id=tid)
    assert read["latest_seq"] == 1 and [m["message_id"] for m in read["messages"]] == [first["message_id"]]

    # The same key with any part of the payload changed is a conflict, and writes nothing.
    for change in ({"body": "fixed it!"}, {"metadata": {"event_type": "fix_pushed", "commit": "abd"}},
                   {"to": None}, {"to_role": "participant"}, {"kind": "chat", "metadata": {}}):
        reply = api.call("post_message", rev, {**payload, **change})
        assert reply.status == 409 and reply.code == "IDEMPOTENCY_CONFLICT", (change, reply.body)
    assert api.ok("get_thread", coord, thread_id=tid)["latest_seq"] == 1

    # The key is per sender: another agent using it gets its own message.
    other = api.ok("post_message", make_token("exec"), **payload)
    assert other["replayed"] is False and other["seq"] == 2


def test_concurrent_duplicate_posts_make_one_message(live_server, make_token):
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    tid = new_thread(live_server.client, coord, TEAM)
    payload = {"thread_id": tid, "schema_version": 1, "kind": "chat", "body": "once", "idempotency_key": "race-1"}
    with clients(live_server.url, 8) as pool:
        replies = race(8, lambda i: pool[i].call("post_message", rev, payload))
    assert all(r.status == 200 for r in replies), [r.body for r in replies]
    assert len({r.body["message_id"] for r in replies}) == 1
    assert sum(1 for r in replies if not r.body["replayed"]) == 1
    assert {r.body["seq"] for r in replies} == {1}
    read = live_server.client.ok("read_messages", coord, thread_id=tid)
    assert read["latest_seq"] == 1 and len(read["messages"]) == 1


def test_create_thread_idempotency(live_server, make_token):
    api, coord = live_server.client, make_token("coord", "coordinator")
    payload = {"title": "Once", "type": "incident", "participants": ["rev"], "idempotency_key": "t-1"}
    first = api.ok("create_thread", coord, **payload)
    again = api.ok("create_thread", coord, **payload)
    assert again["thread_id"] == first["thread_id"] and again["created_at"] == first["created_at"]
    assert again.get("replayed") is True and first.get("replayed") is False
    reply = api.call("create_thread", coord, {**payload, "title": "Twice"})
    assert reply.status == 409 and reply.code == "IDEMPOTENCY_CONFLICT"
    assert len(api.ok("list_threads", coord)["threads"]) == 1

    race_payload = {**payload, "idempotency_key": "t-race"}
    with clients(live_server.url, 8) as pool:
        replies = race(8, lambda i: pool[i].call("create_thread", coord, race_payload))
    assert all(r.status == 200 for r in replies), [r.body for r in replies]
    assert len({r.body["thread_id"] for r in replies}) == 1
    assert len(api.ok("list_threads", coord)["threads"]) == 2


# ------------------------------------------------------------------------------------------------- 4. read_messages
def _seed_read_thread(api: ApiClient, make_token: Callable[..., str]) -> tuple[str, dict[str, str], list[dict]]:
    tokens = {"coord": make_token("coord", "coordinator"), "rev": make_token("rev"), "exec": make_token("exec")}
    tid = new_thread(api, tokens["coord"], TEAM)
    plan = [("rev", "chat", None), ("exec", "event", "fix_pushed"), ("rev", "chat", None), ("exec", "chat", None),
            ("rev", "event", "finding_reported"), ("coord", "system", None), ("exec", "chat", None),
            ("rev", "event", "fix_pushed"), ("exec", "event", "finding_verified"), ("rev", "chat", None),
            ("exec", "chat", None)]
    posted = []
    for i, (who, kind, event_type) in enumerate(plan, 1):
        metadata = {"event_type": event_type} if event_type else {}
        reply = post(api, tokens[who], tid, f"m{i}", kind=kind, metadata=metadata)
        assert reply["seq"] == i
        posted.append({"seq": i, "sender": who, "kind": kind, "event_type": event_type, "body": f"m{i}"})
    return tid, tokens, posted


def test_read_messages_cursor_paging_and_fields(api, make_token):
    tid, tokens, posted = _seed_read_thread(api, make_token)
    total = len(posted)
    rev = tokens["rev"]

    first = api.ok("read_messages", rev, thread_id=tid, limit=3)
    assert [m["seq"] for m in first["messages"]] == [1, 2, 3]
    assert first["next_seq"] == 3 and first["has_more"] is True and first["latest_seq"] == total
    message = first["messages"][0]
    assert set(message) >= MESSAGE_FIELDS
    assert (message["body"], message["kind"], message["schema_version"]) == ("m1", "chat", 1)
    assert (message["sender_agent_id"], message["sender_session_id"]) == ("rev", "rev-s1")
    assert (message["in_reply_to"], message["to"], message["to_role"], message["metadata"]) == (None, None, None, {})
    assert ISO_MS.match(message["created_at"])

    # Following next_seq visits every message exactly once, in order; the last page says has_more=false.
    seen, since, pages = [], 0, 0
    while True:
        page = api.ok("read_messages", rev, thread_id=tid, since_seq=since, limit=4)
        pages += 1
        seen += [m["seq"] for m in page["messages"]]
        assert page["next_seq"] == (page["messages"][-1]["seq"] if page["messages"] else since)
        since = page["next_seq"]
        if not page["has_more"]:
            break
    assert seen == list(range(1, total + 1)) and pages == 3

    # An exact last page has has_more=false; past the end, next_seq is since_seq itself.
    exact = api.ok("read_messages", rev, thread_id=tid, since_seq=total - 2, limit=2)
    assert [m["seq"] for m in exact["messages"]] == [total - 1, total] and exact["has_more"] is False
    for since_seq in (total, total + 5):
        empty = api.ok("read_messages", rev, thread_id=tid, since_seq=since_seq)
        assert empty["messages"] == [] and empty["next_seq"] == since_seq and empty["has_more"] is False
        assert empty["latest_seq"] == total

    for bad in ({"since_seq": -1}, {"limit": 0}, {"limit": 201}, {"wait_ms": 30001}, {"kinds": ["shout"]}):
        reply = api.call("read_messages", rev, {"thread_id": tid, **bad})
        assert reply.status == 400 and reply.code == "INVALID_ARGUMENT", bad


def test_read_messages_filters(api, make_token):
    tid, tokens, posted = _seed_read_thread(api, make_token)
    rev = tokens["rev"]

    def seqs(**filters: Any) -> list[int]:
        return [m["seq"] for m in api.ok("read_messages", rev, thread_id=tid, limit=200, **filters)["messages"]]

    assert seqs(kinds=["event"]) == [p["seq"] for p in posted if p["kind"] == "event"]
    assert seqs(kinds=["chat", "system"]) == [p["seq"] for p in posted if p["kind"] in ("chat", "system")]
    assert seqs(from_agent_id="exec") == [p["seq"] for p in posted if p["sender"] == "exec"]
    assert seqs(event_type="fix_pushed") == [p["seq"] for p in posted if p["event_type"] == "fix_pushed"] == [2, 8]
    assert seqs(kinds=["event"], from_agent_id="rev") == [5, 8]
    assert seqs(from_agent_id="nobody") == []

    # Filters and paging: next_seq is the seq of the last *returned* message, gaps are skipped.
    chats = [p["seq"] for p in posted if p["kind"] == "chat"]
    page = api.ok("read_messages", rev, thread_id=tid, kinds=["chat"], limit=2)
    assert [m["seq"] for m in page["messages"]] == chats[:2] and page["next_seq"] == chats[1]
    assert page["has_more"] is True
    rest = api.ok("read_messages", rev, thread_id=tid, kinds=["chat"], since_seq=page["next_seq"], limit=200)
    assert [m["seq"] for m in rest["messages"]] == chats[2:] and rest["has_more"] is False
    last_chat = api.ok("read_messages", rev, thread_id=tid, kinds=["chat"], since_seq=chats[-1])
    assert last_chat["messages"] == [] and last_chat["has_more"] is False


def test_read_messages_unread_count_and_latest_seq(api, make_token):
    tid, tokens, posted = _seed_read_thread(api, make_token)
    total = len(posted)

    def unread(agent: str) -> int:
        return api.ok("read_messages", tokens[agent], thread_id=tid, limit=1)["unread_count"]

    not_by = {a: sum(1 for p in posted if p["sender"] != a) for a in ("rev", "exec")}
    assert unread("rev") == not_by["rev"] and unread("exec") == not_by["exec"]
    api.ok("ack_read", tokens["rev"], thread_id=tid, last_read_seq=5)
    assert unread("rev") == sum(1 for p in posted if p["seq"] > 5 and p["sender"] != "rev")
    # unread_count follows the cursor, not since_seq
    page = api.ok("read_messages", tokens["rev"], thread_id=tid, since_seq=total)
    assert page["unread_count"] == unread("rev") and page["latest_seq"] == total
    post(api, tokens["exec"], tid, "one more")
    after = api.ok("read_messages", tokens["rev"], thread_id=tid, since_seq=total)
    assert after["latest_seq"] == total + 1 and after["unread_count"] == page["unread_count"] + 1
    api.ok("ack_read", tokens["rev"], thread_id=tid, last_read_seq=total + 1)
    assert unread("rev") == 0


def test_long_poll_wakes_on_commit_in_same_server(live_server, make_token):
    api, coord, rev = live_server.client, make_token("coord", "coordinator"), make_token("rev")
    tid = new_thread(api, coord, TEAM)
    post(api, rev, tid, "before")
    with clients(live_server.url, 1) as (reader,):
        started = time.monotonic()
        worker, box = in_background(lambda: reader.ok("read_messages", coord, thread_id=tid, since_seq=1,
                                                      wait_ms=5000))
        time.sleep(0.3)
        assert "done_at" not in box, "the long-poll returned before anything was posted"
        posted = post(api, rev, tid, "wake up")
        posted_at = time.monotonic()
        worker.join(timeout=10)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert [m["message_id"] for m in result["messages"]] == [posted["message_id"]]
    assert result["messages"][0]["body"] == "wake up" and result["next_seq"] == 2
    assert box["done_at"] - posted_at < 1.5
    assert box["done_at"] - started < 5.0


def test_long_poll_without_post_returns_empty_at_deadline(api, make_token):
    coord = make_token("coord", "coordinator")
    tid = new_thread(api, coord, TEAM)
    started = time.monotonic()
    result = api.ok("read_messages", coord, thread_id=tid, since_seq=0, wait_ms=1200)
    elapsed = time.monotonic() - started
    assert result["messages"] == [] and result["next_seq"] == 0 and result["has_more"] is False
    assert 1.2 <= elapsed < 5.0


# ------------------------------------------------------------------------------------------------- 5. ack + inbox
def test_ack_read_monotonic_and_bounded(api, make_token):
    coord, rev, exec_ = make_token("coord", "coordinator"), make_token("rev"), make_token("exec")
    tid = new_thread(api, coord, TEAM)
    for i in range(4):
        post(api, exec_, tid, f"m{i}")
    ack = api.ok("ack_read", rev, thread_id=tid, last_read_seq=3)
    assert ack["ok"] is True and ack["last_read_seq"] == 3 and ISO_MS.match(ack["updated_at"])
    assert api.ok("ack_read", rev, thread_id=tid, last_read_seq=3)["last_read_seq"] == 3  # same value: fine
    regress = api.call("ack_read", rev, {"thread_id": tid, "last_read_seq": 2})
    assert regress.status == 409 and regress.code == "CONFLICT"
    beyond = api.call("ack_read", rev, {"thread_id": tid, "last_read_seq": 5})
    assert beyond.status == 400 and beyond.code == "INVALID_ARGUMENT"
    negative = api.call("ack_read", rev, {"thread_id": tid, "last_read_seq": -1})
    assert negative.status == 400
    # the refused acks left the cursor where it was
    assert api.ok("read_messages", rev, thread_id=tid)["unread_count"] == 1
    assert api.ok("ack_read", rev, thread_id=tid, last_read_seq=4)["last_read_seq"] == 4
    assert api.ok("read_messages", rev, thread_id=tid)["unread_count"] == 0


def test_inbox_unread_and_addressed(api, make_token):
    coord = make_token("coord", "coordinator")
    tok = {a: make_token(a) for a in ("rev", "exec", "third")}
    tid = new_thread(api, coord, [{"agent_id": "rev", "thread_role": "reviewer"},
                                  {"agent_id": "exec", "thread_role": "executor"}, "third"])
    quiet = new_thread(api, coord, ["rev", "exec", "third"])
    post(api, tok["exec"], tid, "broadcast")                      # 1: addressed to everyone
    post(api, tok["exec"], tid, "for third", to=["third"])        # 2
    post(api, tok["exec"], tid, "for reviewers", to_role="reviewer")  # 3
    post(api, tok["exec"], tid, "for rev", to=["rev"])            # 4
    post(api, tok["rev"], tid, "rev speaks")                      # 5: broadcast by rev
    post(api, tok["rev"], quiet, "rev alone")                     # other thread: only rev's own message

    def entries(agent: str) -> dict[str, dict[str, Any]]:
        return {e["thread_id"]: e for e in api.ok("inbox", tok[agent])["threads"]}

    rev = entries("rev")
    assert set(rev) == {tid}  # own messages are never unread
    assert rev[tid]["unread_count"] == 4 and rev[tid]["addressed_to_me"] == 3
    assert (rev[tid]["last_read_seq"], rev[tid]["latest_seq"], rev[tid]["status"]) == (0, 5, "active")
    assert rev[tid]["title"] == "Review"
    third = entries("third")
    assert third[tid]["unread_count"] == 5 and third[tid]["addressed_to_me"] == 3  # 1, 2 and 5
    assert third[quiet]["unread_count"] == 1 and third[quiet]["addressed_to_me"] == 1
    exec_ = entries("exec")
    assert exec_[tid]["unread_count"] == 1 and exec_[tid]["addressed_to_me"] == 1  # only rev's broadcast

    api.ok("ack_read", tok["rev"], thread_id=tid, last_read_seq=2)
    rev = entries("rev")
    assert rev[tid]["unread_count"] == 2 and rev[tid]["addressed_to_me"] == 2 and rev[tid]["last_read_seq"] == 2
    api.ok("ack_read", tok["rev"], thread_id=tid, last_read_seq=4)
    assert entries("rev") == {}  # only its own message is left after the cursor


def test_inbox_limit_counts_only_threads_with_unread(api, make_token):
    coord, rev, exec_ = make_token("coord", "coordinator"), make_token("rev"), make_token("exec")
    older = new_thread(api, coord, TEAM)
    post(api, exec_, older, "for rev")
    for _ in range(3):  # newer threads where everything after rev's cursor is its own
        post(api, rev, new_thread(api, coord, TEAM), "talking to myself")
    [entry] = api.ok("inbox", rev, limit=1)["threads"]
    assert entry["thread_id"] == older and entry["unread_count"] == 1


def test_inbox_long_poll_wakes_on_post(live_server, make_token):
    api, coord, rev, exec_ = (live_server.client, make_token("coord", "coordinator"), make_token("rev"),
                              make_token("exec"))
    tid = new_thread(api, coord, TEAM)
    assert api.ok("inbox", rev)["threads"] == []
    with clients(live_server.url, 1) as (reader,):
        worker, box = in_background(lambda: reader.ok("inbox", rev, wait_ms=5000))
        time.sleep(0.3)
        assert "done_at" not in box
        post(api, exec_, tid, "ping", to=["rev"])
        posted_at = time.monotonic()
        worker.join(timeout=10)
    assert "error" not in box, box.get("error")
    [entry] = box["result"]["threads"]
    assert entry["thread_id"] == tid and entry["unread_count"] == 1 and entry["addressed_to_me"] == 1
    assert box["done_at"] - posted_at < 1.5

    api.ok("ack_read", rev, thread_id=tid, last_read_seq=1)
    started = time.monotonic()
    assert api.ok("inbox", rev, wait_ms=600)["threads"] == []
    assert time.monotonic() - started >= 0.6


# ------------------------------------------------------------------------------------------------- 6. validation
def test_post_message_addressing_validation(api, make_token):
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    tid = new_thread(api, coord, [{"agent_id": "rev", "thread_role": "reviewer"}, "exec"])
    other = new_thread(api, coord, ["rev"])
    foreign = post(api, rev, other, "elsewhere")["message_id"]
    local = post(api, rev, tid, "here")["message_id"]
    base = {"thread_id": tid, "schema_version": 1, "kind": "chat", "body": "x"}

    bad = [
        {"in_reply_to": foreign},                       # a message of another thread
        {"in_reply_to": "msg_doesnotexist"},
        {"to": ["stranger"]},                           # not a participant
        {"to": ["exec", "coord"]},                      # the coordinator is not a participant either
        {"to_role": "auditor"},                         # no participant has this thread role
        {"kind": "event", "metadata": {}},              # event without metadata.event_type
        {"kind": "event", "metadata": {"event_type": ""}},
        {"kind": "event", "metadata": {"severity": "high"}},
        {"schema_version": 2},
        {"body": ""},
    ]
    for change in bad:
        reply = api.call("post_message", rev, {**base, **change})
        assert reply.status == 400 and reply.code == "INVALID_ARGUMENT", (change, reply.status, reply.body)
    assert api.ok("get_thread", coord, thread_id=tid)["latest_seq"] == 1  # nothing was written

    # the same fields naming valid targets are accepted
    ok = post(api, rev, tid, "reply", in_reply_to=local, to=["exec"], to_role="reviewer")
    assert ok["seq"] == 2
    stored = api.ok("read_messages", coord, thread_id=tid, since_seq=1)["messages"][0]
    assert (stored["in_reply_to"], stored["to"], stored["to_role"]) == (local, ["exec"], "reviewer")
    assert event(api, rev, tid, "custom_event", "custom types are allowed")["seq"] == 3


# ------------------------------------------------------------------------------------------------- 7. loop guard
def test_loop_guard_blocks_after_20_messages_without_progress(live_server, make_token, settings):
    api = live_server.client
    coord = make_token("coord", "coordinator")
    tokens = [make_token("rev"), make_token("exec")]
    tid = new_thread(api, coord, TEAM)
    for i in range(1, 20):
        assert post(api, tokens[i % 2], tid, f"round {i}")["thread_status"] == "active"
    assert api.ok("get_thread", coord, thread_id=tid)["status"] == "active"
    tripped = post(api, tokens[0], tid, "round 20")
    assert tripped["thread_status"] == "blocked" and tripped["seq"] == 20

    thread = api.ok("get_thread", coord, thread_id=tid)
    assert thread["status"] == "blocked"
    assert thread["escalation"] is not None
    assert thread["escalation"]["reason"].startswith("loop_guard:no_progress")
    assert thread["escalation"]["reason"] == "loop_guard:no_progress:20"
    system = api.ok("read_messages", coord, thread_id=tid, kinds=["system"])["messages"]
    assert len(system) == 1 and system[0]["seq"] == 21
    assert system[0]["metadata"].get("event_type") == "thread_escalated"
    audits = query(settings.db, "SELECT reason, details FROM audit_events WHERE thread_id = ?"
                     " AND outcome = 'ok'", (tid,))
    assert any(reason and reason.startswith("loop_guard:no_progress") for reason, _ in audits), audits

    # a blocked thread still accepts messages (SPEC §4) and is not escalated twice
    later = post(api, tokens[1], tid, "still here")
    assert later["thread_status"] == "blocked" and later["seq"] == 22
    assert len(api.ok("read_messages", coord, thread_id=tid, kinds=["system"])["messages"]) == 1


def _svc_thread(parts: Parts, participants: list[str] | None = None) -> str:
    req = CreateThreadInput(title="Loop", type="workflow", participants=participants or ["rev", "exec"])
    return thread_service.create_thread(parts.bridge, call_as("coord", "coordinator"), req)["thread_id"]


def _svc_post(parts: Parts, agent: str, thread_id: str, body: str, event_type: str | None = None,
              **metadata: Any) -> dict[str, Any]:
    kind = "event" if event_type else "chat"
    meta = {"event_type": event_type, **metadata} if event_type else metadata
    req = PostMessageInput(thread_id=thread_id, schema_version=1, kind=kind, body=body, metadata=meta)
    return message_service.post_message(parts.bridge, call_as(agent), req)


def _svc_status(parts: Parts, thread_id: str) -> dict[str, Any]:
    return thread_service.get_thread(parts.bridge, call_as("coord", "coordinator"), GetThreadInput(thread_id=thread_id))


def test_loop_guard_progress_resets_the_counter(make_parts):
    parts = make_parts(loop_guard_turns=5, write_quota_per_min=0)
    tid = _svc_thread(parts)
    for i in range(4):
        assert _svc_post(parts, "rev", tid, f"a{i}")["thread_status"] == "active"
    assert _svc_post(parts, "exec", tid, "pushed", "fix_pushed", commit="c1")["thread_status"] == "active"
    for i in range(4):
        assert _svc_post(parts, "rev", tid, f"b{i}")["thread_status"] == "active"
    assert _svc_post(parts, "exec", tid, "verified", "finding_verified")["thread_status"] == "active"
    for i in range(4):
        assert _svc_post(parts, "rev", tid, f"c{i}")["thread_status"] == "active"
    # a status change is progress too
    coord = call_as("coord", "coordinator")
    for status in ("resolved", "active"):
        thread_service.update_thread_status(parts.bridge, coord, UpdateThreadStatusInput(
            thread_id=tid, status=status, reason="checkpoint"))
    for i in range(4):
        assert _svc_post(parts, "rev", tid, f"d{i}")["thread_status"] == "active"
    assert _svc_post(parts, "rev", tid, "d4")["thread_status"] == "blocked"
    thread = _svc_status(parts, tid)
    assert thread["status"] == "blocked" and thread["escalation"]["reason"] == "loop_guard:no_progress:5"


def test_loop_guard_repeated_finding_by_id(api, make_token):
    coord, rev, exec_ = make_token("coord", "coordinator"), make_token("rev"), make_token("exec")
    tid = new_thread(api, coord, TEAM)
    assert event(api, rev, tid, "finding_reported", "Null deref", finding_id="F-1")["thread_status"] == "active"
    assert event(api, rev, tid, "finding_reported", "Other bug", finding_id="F-2")["thread_status"] == "active"
    assert event(api, exec_, tid, "finding_reported", "Null deref again", finding_id="F-1")["thread_status"] == "active"
    third = event(api, rev, tid, "finding_reported", "worded differently", finding_id="F-1")
    assert third["thread_status"] == "blocked"
    thread = api.ok("get_thread", coord, thread_id=tid)
    assert thread["status"] == "blocked"
    assert thread["escalation"]["reason"] == "loop_guard:repeated_finding:F-1"
    system = api.ok("read_messages", coord, thread_id=tid, kinds=["system"])["messages"]
    assert [m["metadata"].get("event_type") for m in system] == ["thread_escalated"]


def test_loop_guard_repeated_finding_by_normalised_body(api, make_token):
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    tid = new_thread(api, coord, TEAM)
    bodies = ["Null deref in parse()", "  null   DEREF in parse()  ", "NULL deref\tin parse()\n"]
    statuses = [event(api, rev, tid, "finding_reported", b)["thread_status"] for b in bodies]
    assert statuses == ["active", "active", "blocked"]
    reason = api.ok("get_thread", coord, thread_id=tid)["escalation"]["reason"]
    assert reason.startswith("loop_guard:repeated_finding:") and len(reason) > len("loop_guard:repeated_finding:")
    # a chat with the same words is not a finding report
    tid2 = new_thread(api, coord, TEAM)
    for b in bodies:
        post(api, rev, tid2, b)
    assert api.ok("get_thread", coord, thread_id=tid2)["status"] == "active"


def test_loop_guard_counters_survive_restart(make_parts, tmp_path):
    db = str(tmp_path / "guard.db")
    first = make_parts(db=db, loop_guard_turns=10, write_quota_per_min=0)
    chatty, finder = _svc_thread(first), _svc_thread(first)
    for i in range(6):
        _svc_post(first, "rev", chatty, f"turn {i}")
    for _ in range(2):
        _svc_post(first, "rev", finder, "same bug", "finding_reported", finding_id="F-7")
    first.close()

    second = make_parts(db=db, loop_guard_turns=10, write_quota_per_min=0)
    for i in range(6, 9):
        assert _svc_post(second, "exec", chatty, f"turn {i}")["thread_status"] == "active"
    assert _svc_post(second, "exec", chatty, "turn 9")["thread_status"] == "blocked"
    assert _svc_status(second, chatty)["escalation"]["reason"] == "loop_guard:no_progress:10"
    assert _svc_post(second, "exec", finder, "same bug", "finding_reported",
                     finding_id="F-7")["thread_status"] == "blocked"
    assert _svc_status(second, finder)["escalation"]["reason"] == "loop_guard:repeated_finding:F-7"


# ------------------------------------------------------------------------------------------------- 8. quota
def test_write_quota_rate_limits_the_sixth_quick_post(make_parts, make_token):
    parts = make_parts(write_quota_per_min=60, write_burst=5)
    rev, exec_, coord = make_token("rev"), make_token("exec"), make_token("coord", "coordinator")
    with serving(parts) as api:
        tid = new_thread(api, coord, TEAM)
        for i in range(5):
            post(api, rev, tid, f"quick {i}")
        reply = api.call("post_message", rev, {"thread_id": tid, "schema_version": 1, "kind": "chat", "body": "6th"})
        assert reply.status == 429 and reply.code == "RATE_LIMITED", reply.body
        retry_after = reply.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
        assert api.ok("get_thread", coord, thread_id=tid)["latest_seq"] == 5  # nothing written
        assert post(api, exec_, tid, "another agent has its own quota")["seq"] == 6


# ------------------------------------------------------------------------------------------------- 9. freeze
def test_freeze_and_unfreeze(live_server, make_token, settings):
    api, db = live_server.client, settings.db
    coord, rev = make_token("coord", "coordinator"), make_token("rev")
    tid = new_thread(api, coord, TEAM)
    create = {"title": "New", "type": "conversation", "participants": ["rev"]}
    assert api.raw("GET", "/health").body["frozen"] in (None, False)

    done = run_bridge("freeze", "--db", db, "--reason", "rollback drill")
    assert done.returncode == 0, done.stderr
    refused = api.call("create_thread", coord, create)
    assert refused.status == 503 and refused.code == "UNAVAILABLE"
    assert refused.body["error"]["details"]["reason"] == "frozen"
    assert refused.headers.get("Retry-After")
    assert post(api, rev, tid, "posting still works")["seq"] == 1

    done = run_bridge("freeze", "--all", "--db", db, "--reason", "rollback drill: everything")
    assert done.returncode == 0, done.stderr
    blocked = api.call("post_message", rev, {"thread_id": tid, "schema_version": 1, "kind": "chat", "body": "no"})
    assert blocked.status == 503 and blocked.code == "UNAVAILABLE"
    assert blocked.body["error"]["details"]["reason"] == "frozen"
    assert api.call("create_thread", coord, create).status == 503
    ack = api.call("ack_read", rev, {"thread_id": tid, "last_read_seq": 1})
    assert ack.status == 503 and ack.body["error"]["details"]["reason"] == "frozen"
    beat = api.call("heartbeat_session", rev, {"session_id": "rev-s1", "runtime": "codex_cli", "status": "idle",
                                               "resumable": True})
    assert beat.status == 503 and beat.body["error"]["details"]["reason"] == "frozen"
    read = api.ok("read_messages", rev, thread_id=tid)
    assert [m["seq"] for m in read["messages"]] == [1] and read["latest_seq"] == 1
    assert api.ok("get_thread", coord, thread_id=tid)["latest_seq"] == 1
    health = api.raw("GET", "/health")
    assert health.status == 200 and health.body["frozen"] not in (None, False, "")

    done = run_bridge("unfreeze", "--db", db, "--reason", "rollback verified")
    assert done.returncode == 0, done.stderr
    assert api.raw("GET", "/health").body["frozen"] in (None, False)
    assert api.ok("create_thread", coord, **create)["status"] == "active"
    assert post(api, rev, tid, "thawed")["seq"] == 2

    audits = query(db, "SELECT operation, actor_role, reason FROM audit_events"
                         " WHERE operation IN ('freeze', 'unfreeze') ORDER BY audit_id")
    assert [(op, role) for op, role, _ in audits] == [("freeze", "operator"), ("freeze", "operator"),
                                                      ("unfreeze", "operator")]
    assert audits[0][2] == "rollback drill"


# ------------------------------------------------------------------------------------------------- 10. summary
def test_summarize_thread_open_items_and_latest_fix(api, make_token):
    coord, rev, exec_ = make_token("coord", "coordinator"), make_token("rev"), make_token("exec")
    tid = new_thread(api, coord, TEAM)
    f1 = event(api, rev, tid, "finding_reported", "Null deref in parse()\nstack trace follows",
               finding_id="F1", severity="high", file="src/parse.py", line=12)
    f2 = event(api, rev, tid, "finding_reported", "Off-by-one in pager\ndetails",
               finding_id="F2", severity="low", file="src/pager.py", line=3)
    f3 = event(api, rev, tid, "finding_reported", "Leaky file handle", severity="medium", file="src/io.py")
    f4 = event(api, rev, tid, "finding_reported", "Typo in docs", severity="low")
    event(api, exec_, tid, "fix_pushed", "Fix the null deref", commit="abc1234")
    post(api, exec_, tid, "verified", kind="event", in_reply_to=f3["message_id"],
         metadata={"event_type": "finding_verified"})                             # closes F3 via in_reply_to
    event(api, rev, tid, "finding_verified", "null deref verified", finding_id="F1")  # closes F1 via finding_id
    post(api, exec_, tid, "not a bug", kind="event", in_reply_to=f2["message_id"],
         metadata={"event_type": "finding_rejected"})                             # does not close F2
    event(api, exec_, tid, "fix_pushed", "Second round", commit="def5678")
    post(api, rev, tid, "thanks")

    summary = api.ok("summarize_thread", coord, thread_id=tid)
    items = {i["message_id"]: i for i in summary["open_items"]}
    assert set(items) == {f2["message_id"], f4["message_id"]}
    two = items[f2["message_id"]]
    assert (two["seq"], two["severity"], two["file"], two["line"]) == (f2["seq"], "low", "src/pager.py", 3)
    assert two["sender_agent_id"] == "rev"
    assert "Off-by-one in pager" in two.values() and "details" not in str(two.values())
    four = items[f4["message_id"]]
    assert four["severity"] == "low" and four.get("file") is None and four.get("line") is None
    assert "def5678" in summary["summary"]
    assert summary["last_status"] == "active"
    assert f1["message_id"] not in items and f3["message_id"] not in items

    # a finding reported again after it was verified is open again: only a *later* verification closes it
    again = event(api, rev, tid, "finding_reported", "Null deref is back", finding_id="F1", severity="high")
    reopened = {i["message_id"] for i in api.ok("summarize_thread", coord, thread_id=tid)["open_items"]}
    assert reopened == {f2["message_id"], f4["message_id"], again["message_id"]}

    # a participant of the thread may summarise it too; the latest fix wins
    assert "def5678" in api.ok("summarize_thread", rev, thread_id=tid)["summary"]
