"""The checks behind the go-live rows of `bridge ops readiness` that run against one live stack
(`bridge.testing.service`).

Each function drives the real service over HTTP (and the operator CLI as subprocesses on the same database file),
records every sub-check with what was observed, and returns an `Evidence`. Nothing is mocked: a row passes only
if the running bridge behaved as docs/api.md says.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

import bridge as bridge_pkg
from bridge.auth.keys import load_or_create
from bridge.testing.client import Reply, metric
from bridge.testing.processes import wait_until
from bridge.testing.service import ServiceStack
from bridge.testing.tokens import Minter

# The metric names that are a contract for dashboards and alerts.
CONTRACT_METRICS = (
    "bridge_requests_total", "bridge_request_duration_seconds", "bridge_messages_posted_total",
    "bridge_post_to_visible_seconds", "bridge_threads", "bridge_escalations_total", "bridge_loop_guard_trips_total",
    "bridge_auth_failures_total", "bridge_trigger_jobs", "bridge_trigger_attempts_total",
    "bridge_trigger_dispatch_seconds", "bridge_worker_last_tick_timestamp_seconds", "bridge_frozen",
)


@dataclass
class Evidence:
    """Sub-checks (each with what was observed) and facts worth showing."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: Any, observed: Any = None) -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "observed": observed})
        return bool(ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c['check']} (observed: {c['observed']})" for c in self.checks if not c["ok"]]


def brief(reply: Reply) -> str:
    """`<status> <code> (<reason>)` of a reply, for the evidence."""
    return f"{reply.status} {reply.code or ''}".strip() + (f" ({reply.reason})" if reply.reason else "")


def request(stack: ServiceStack, method: str, path: str, body: bytes | None = None, *, token: str | None = None,
            headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request on a fresh connection (a refusal may close it); the JSON body decoded when it is JSON."""
    with stack.client(token, timeout=60) as client:
        return client.exchange(method, path, headers=headers, body=body)


def call(stack: ServiceStack, token: str | None, command: str, **payload: Any) -> Reply:
    return request(stack, "POST", f"/v1/mcp/{command}", json.dumps(payload).encode(), token=token)


def ok(stack: ServiceStack, token: str, command: str, **payload: Any) -> dict[str, Any]:
    reply = call(stack, token, command, **payload)
    if reply.status != 200:
        raise RuntimeError(f"{command} -> {reply.status}: {reply.body}")
    result: dict[str, Any] = reply.body
    return result


# ------------------------------------------------------------------------------------------------ functional
def pilot_workflow(stack: ServiceStack) -> Evidence:
    """Coordinator opens a thread; the reviewer reports a finding; the executioner pushes a fix addressed to the
    reviewer, whose stand-in (idle, in its tmux pane) is woken by the worker, reads and acknowledges; the reviewer
    verifies; the coordinator resolves. The summary then has no open item."""
    ev = Evidence()
    stack.launch_standin("reviewer")
    coord, reviewer, executioner = (stack.token("pilot-coordinator", "coordinator"), stack.token("reviewer"),
                                    stack.token("executioner"))
    thread = ok(stack, coord, "create_thread", title="pilot: review PR 42", type="workflow", participants=[
        {"agent_id": "reviewer", "thread_role": "reviewer"}, {"agent_id": "executioner", "thread_role": "executioner"}])
    tid = thread["thread_id"]
    ev.facts["thread_id"] = tid
    ev.check("coordinator creates the workflow thread (active)", thread["status"] == "active", thread["status"])
    finding = ok(stack, reviewer, "post_message", thread_id=tid, schema_version=1, kind="event",
                 body="Null check missing in parse()", to_role="executioner",
                 metadata={"event_type": "finding_reported", "finding_id": "F-1", "severity": "high",
                           "file": "src/parse.py", "line": 88})
    ev.check("reviewer reports a finding", finding["seq"] == 1, {"seq": finding["seq"]})
    fix = ok(stack, executioner, "post_message", thread_id=tid, schema_version=1, kind="event",
             body="Fixed in abc1234, please re-review", in_reply_to=finding["message_id"], to=["reviewer"],
             metadata={"event_type": "fix_pushed", "commit": "abc1234", "finding_id": "F-1"})
    ev.check("executioner posts fix_pushed to the reviewer", fix["seq"] == 2, {"seq": fix["seq"]})

    def woken() -> Any:
        rows = stack.query("SELECT j.trigger_id, j.status, j.origin, m.created_at, (SELECT MIN(a.finished_at) FROM"
                           " trigger_attempts a WHERE a.trigger_id = j.trigger_id AND a.outcome = 'typed')"
                           " FROM trigger_jobs j JOIN messages m ON m.thread_id = j.thread_id AND m.seq = ?"
                           " WHERE j.thread_id = ? AND j.target_agent_id = 'reviewer' AND j.status = 'delivered'",
                           (fix["seq"], tid))
        return rows[0] if rows else None

    job = wait_until(woken, 30, 0.01)
    if ev.check("worker wakes the idle reviewer: trigger delivered to its pane", job, job):
        trigger_id, _, origin, created, typed = job
        in_pane = stack.tmux.wait_for_text(stack.panes["reviewer"], f"STANDIN ACKED trigger={trigger_id}", 10)
        ev.check("the stand-in read the thread and acknowledged in its pane", in_pane, trigger_id)
        ev.facts["wake"] = {"trigger_id": trigger_id, "origin": origin, "message_to_wake_ms": typed - created}
    cursor = stack.query("SELECT last_read_seq FROM read_cursors WHERE thread_id = ? AND agent_id = 'reviewer'",
                         (tid,))
    ev.check("the reviewer's read cursor reached the fix", cursor and cursor[0][0] >= fix["seq"], cursor)
    verified = ok(stack, reviewer, "post_message", thread_id=tid, schema_version=1, kind="event",
                  body="Verified: parse() handles None", in_reply_to=finding["message_id"],
                  metadata={"event_type": "finding_verified", "finding_id": "F-1"})
    ev.check("reviewer verifies the fix", verified["seq"] == 3, {"seq": verified["seq"]})
    summary = ok(stack, coord, "summarize_thread", thread_id=tid)
    ev.check("summary: no open item after verification", summary["open_items"] == [], summary["open_items"])
    ev.check("summary names the pushed commit", "abc1234" in summary["summary"], summary["summary"][:300])
    resolved = ok(stack, coord, "update_thread_status", thread_id=tid, status="resolved",
                  reason="pilot: finding F-1 verified")
    ev.check("coordinator resolves the thread", resolved["status"] == "resolved" and resolved["changed"], resolved)
    final = ok(stack, coord, "get_thread", thread_id=tid)
    ev.check("get_thread reports resolved", final["status"] == "resolved", final["status"])
    page = ok(stack, coord, "read_messages", thread_id=tid, since_seq=0, limit=50)
    timeline = [(m["seq"], m["kind"], m["metadata"].get("event_type"), m["sender_agent_id"]) for m in page["messages"]]
    ev.facts["timeline"] = timeline
    ev.check("timeline is gapless and ordered", [t[0] for t in timeline] == list(range(1, len(timeline) + 1)),
             [t[0] for t in timeline])
    return ev


# ------------------------------------------------------------------------------------------------ security
def security(stack: ServiceStack) -> Evidence:
    """Refusals over real HTTP: credentials (missing, forged, alg=none, HMAC, expired, over-long, revoked, other
    workspace), authorization (outsider, participant closing, identity hint) and bad input (every one enveloped)."""
    ev = Evidence()
    settings, key = stack.settings, stack.minter.key
    coord = stack.token("sec-coordinator", "coordinator")
    tid = ok(stack, coord, "create_thread", title="security", type="conversation",
             participants=["sec-member"])["thread_id"]
    now = time.time()

    def mint(**claims: Any) -> str:
        """A token of sec-member signed with the bridge's own key, with claims changed (None removes one)."""
        return stack.token("sec-member", claims=claims)

    other = load_or_create(stack.workdir / "forger.data")  # a key the bridge never saw, claiming the real kid
    _, base = Minter(other, settings).issue("sec-member")
    forged = jwt.encode(base, other.private, algorithm="EdDSA", headers={"kid": key.kid})
    unsigned = jwt.encode(base, None, algorithm="none")
    public = key.public.public_bytes_raw()  # HMAC keyed with the public key: the classic confusion
    hmac = jwt.encode(base, public, algorithm="HS256", headers={"kid": key.kid})
    credentials = {
        "forged signature": forged, "alg=none": unsigned, "HS256 with the public key": hmac,
        "expired": mint(iat=int(now) - 7200, exp=int(now) - 3600),
        "lifetime over the maximum": mint(iat=int(now), exp=int(now + settings.token_max_ttl + 3600)),
        "wrong issuer": mint(iss="someone-else"), "missing jti": mint(jti=None), "exp as a string": mint(
            exp=str(int(now) + 600)),
    }
    reply = call(stack, None, "get_thread", thread_id=tid)
    ev.check("no token -> 401 UNAUTHORIZED with WWW-Authenticate: Bearer",
             reply.status == 401 and reply.code == "UNAUTHORIZED" and "bearer" in reply.headers.get(
                 "www-authenticate", "").lower(), brief(reply))
    for name, token in credentials.items():
        reply = call(stack, token, "get_thread", thread_id=tid)
        ev.check(f"{name} token -> 401 UNAUTHORIZED", (reply.status, reply.code) == (401, "UNAUTHORIZED"),
                 brief(reply))
    # revocation: by jti, then every token of an agent, through the operator CLI on the same database file
    for kind, flag in (("jti", "--jti"), ("agent", "--agent-id")):
        token, claims = stack.minter.issue(f"sec-revoked-{kind}", "coordinator")
        before = call(stack, token, "list_threads")
        done = stack.bridge("token", "revoke", flag, claims["jti"] if kind == "jti" else claims["agent_id"],
                             "--reason", "readiness", "--db", str(stack.db))
        after = call(stack, token, "list_threads")
        ev.check(f"revoked by {kind} -> accepted before, 401 on the next request",
                 before.status == 200 and done.returncode == 0 and (after.status, after.code) == (401, "UNAUTHORIZED"),
                 {"before": brief(before), "revoke_exit": done.returncode, "after": brief(after)})
    reply = call(stack, stack.token("sec-member", workspace="elsewhere"), "get_thread", thread_id=tid)
    ev.check("token of another workspace -> 403 WORKSPACE_MISMATCH",
             (reply.status, reply.code) == (403, "WORKSPACE_MISMATCH"), brief(reply))
    reply = call(stack, stack.token("sec-outsider"), "get_thread", thread_id=tid)
    ev.check("participant of other threads reading this one -> 403 FORBIDDEN", (reply.status, reply.code) == (
        403, "FORBIDDEN"), brief(reply))
    member = stack.token("sec-member")
    reply = call(stack, member, "update_thread_status", thread_id=tid, status="closed", reason="done")
    ev.check("participant forcing close -> 403 worker_cannot_force_close",
             (reply.status, reply.reason) == (403, "worker_cannot_force_close"), brief(reply))
    reply = call(stack, member, "post_message", thread_id=tid, schema_version=1, kind="chat", body="hi",
                 sender_agent_id="sec-coordinator")
    ev.check("identity hint differing from the claims -> 403 claim_mismatch",
             (reply.status, reply.reason) == (403, "claim_mismatch"), brief(reply))
    # bad input, each refused in the JSON envelope
    post = {"thread_id": tid, "schema_version": 1, "kind": "chat", "body": "x"}
    bad = {
        "unknown field": (json.dumps({**post, "bogus": 1}).encode(), {}, 400, "INVALID_ARGUMENT"),
        "malformed JSON": (b'{"thread_id": ', {}, 400, "INVALID_ARGUMENT"),
        "NaN": (json.dumps({**post, "metadata": {"x": float("nan")}}).encode(), {}, 400, "INVALID_ARGUMENT"),
        "duplicate keys": (b'{"thread_id": "a", "thread_id": "b", "schema_version": 1, "kind": "chat", "body": "x"}',
                           {}, 400, "INVALID_ARGUMENT"),
        "nesting deeper than 32": (json.dumps({**post, "metadata": _nested(40)}).encode(), {}, 400,
                                   "INVALID_ARGUMENT"),
        "NUL in text": (json.dumps({**post, "body": "a\u0000b"}).encode(), {}, 400, "INVALID_ARGUMENT"),
        "body over 256 KiB": (json.dumps({**post, "body": "x" * (settings.max_body + 10)}).encode(), {}, 413,
                              "PAYLOAD_TOO_LARGE"),
        "text/plain body": (json.dumps(post).encode(), {"Content-Type": "text/plain"}, 415,
                            "UNSUPPORTED_MEDIA_TYPE"),
    }
    for name, (body, headers, status, code) in bad.items():
        reply = request(stack, "POST", "/v1/mcp/post_message", body, token=member, headers=headers)
        enveloped = isinstance(reply.body, dict) and {"error", "request_id", "occurred_at"} <= set(reply.body)
        ev.check(f"{name} -> {status} {code} in the envelope", (reply.status, reply.code) == (status, code)
                 and enveloped and "x-request-id" in reply.headers, brief(reply))
    reply = request(stack, "POST", "/v1/mcp/no_such_command", b"{}", token=member)
    ev.check("unknown command -> 404 NOT_FOUND", (reply.status, reply.code) == (404, "NOT_FOUND"), brief(reply))
    reply = request(stack, "GET", "/v1/mcp/post_message", token=member)
    ev.check("wrong method -> 405 with Allow", reply.status == 405 and reply.code == "METHOD_NOT_ALLOWED"
             and "allow" in reply.headers, brief(reply))
    refused = dict(stack.query("SELECT reason, COUNT(*) FROM audit_events WHERE outcome = 'refused'"
                               " GROUP BY reason"))
    ev.check("refusals are in the audit trail", refused.get("UNAUTHORIZED", 0) >= 1
             and refused.get("FORBIDDEN", 0) >= 1 and refused.get("WORKSPACE_MISMATCH", 0) >= 1, refused)
    return ev


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# ------------------------------------------------------------------------------------------------ signals
def total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels in a Prometheus exposition; 0 when there is none."""
    return metric(text, name, **labels) or 0.0


def signals(stack: ServiceStack) -> Evidence:
    """/health, /ready and /metrics as an operator's probes and dashboards see them, after real traffic."""
    ev = Evidence()
    # a long-poll that a post satisfies, so the post-to-visible histogram has a real observation
    coord = stack.token("sig-coordinator", "coordinator")
    tid = ok(stack, coord, "create_thread", title="signals", type="conversation", participants=["sig-a"])["thread_id"]
    seen: list[Reply] = []
    poll = threading.Thread(target=lambda: seen.append(call(stack, coord, "read_messages", thread_id=tid,
                                                            since_seq=0, wait_ms=10_000)))
    poll.start()
    time.sleep(0.2)
    ok(stack, coord, "post_message", thread_id=tid, schema_version=1, kind="chat", body="visible?")
    poll.join(15)
    ev.check("a long-poll returns the message posted while it waited",
             seen and seen[0].status == 200 and len(seen[0].body["messages"]) == 1, brief(seen[0]) if seen else None)
    health = request(stack, "GET", "/health")
    age = health.body.get("worker", {}).get("last_tick_age_seconds") if isinstance(health.body, dict) else None
    ev.check("/health: 200, status ok, version", health.status == 200 and health.body.get("status") == "ok"
             and health.body.get("version") == bridge_pkg.__version__, health.body)
    ev.check("/health: the worker's heartbeat is fresh (< 2 poll intervals)",
             age is not None and age < 2 * stack.settings.worker_poll + 1, age)
    ready = request(stack, "GET", "/ready")
    ev.check("/ready: 200 with every check ok", ready.status == 200 and isinstance(ready.body, dict) and all(
        v == "ok" for v in ready.body.get("checks", {"x": "missing"}).values()), ready.body)
    metrics = request(stack, "GET", "/metrics")
    text = metrics.body if isinstance(metrics.body, str) else ""
    ev.check("/metrics: 200, Prometheus text", metrics.status == 200 and metrics.headers.get(
        "content-type", "").startswith("text/plain"), metrics.headers.get("content-type"))
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    missing = [m for m in CONTRACT_METRICS if m not in declared and m.removesuffix("_total") not in declared]
    ev.check(f"/metrics: all {len(CONTRACT_METRICS)} contract metric names exposed", not missing,
             {"missing": missing})
    moved = {
        "bridge_requests_total{code=UNAUTHORIZED}": total(text, "bridge_requests_total", code="UNAUTHORIZED"),
        "bridge_auth_failures_total": total(text, "bridge_auth_failures_total"),
        "bridge_messages_posted_total": total(text, "bridge_messages_posted_total"),
        "bridge_post_to_visible_seconds_count": total(text, "bridge_post_to_visible_seconds_count"),
        "bridge_request_duration_seconds_count": total(text, "bridge_request_duration_seconds_count"),
        "bridge_trigger_attempts_total": total(text, "bridge_trigger_attempts_total"),
        "bridge_trigger_dispatch_seconds_count": total(text, "bridge_trigger_dispatch_seconds_count"),
        "bridge_threads{status=resolved}": total(text, "bridge_threads", status="resolved"),
        "bridge_trigger_jobs{status=delivered}": total(text, "bridge_trigger_jobs", status="delivered"),
    }
    ev.facts["metrics"] = moved
    ev.check("alert signals move with real traffic (auth failures, posts, visibility, wakes, threads)",
             all(v > 0 for v in moved.values()), moved)
    tick = total(text, "bridge_worker_last_tick_timestamp_seconds")
    ev.check("bridge_worker_last_tick_timestamp_seconds is recent", time.time() - tick < 2 * stack.settings.worker_poll
             + 1, round(time.time() - tick, 3))
    ev.check("bridge_frozen is 0", total(text, "bridge_frozen") == 0, total(text, "bridge_frozen"))
    spec = request(stack, "GET", "/v1/openapi.json")
    ev.check("/v1/openapi.json is OpenAPI 3.1", spec.status == 200 and str(spec.body.get("openapi", "")).startswith(
        "3.1"), spec.status)
    return ev


# ------------------------------------------------------------------------------------------------ operator
def operator_controls(stack: ServiceStack) -> Evidence:
    """The operator commands as an operator types them, on the live database file, with their exit codes."""
    ev = Evidence()
    db = ["--db", str(stack.db)]
    actor = ["--actor", "human:readiness"]
    coord = stack.token("op-coordinator", "coordinator")
    tid = ok(stack, coord, "create_thread", title="operator controls", type="incident",
             participants=["op-reviewer", "op-executioner"])["thread_id"]
    ev.facts["thread_id"] = tid

    def run(label: str, expect: int, *args: str, status: str | None = None) -> dict[str, Any] | None:
        done = stack.bridge(*args, *db, "--json")
        doc = None
        try:
            doc = json.loads(done.stdout) if done.stdout.strip() else json.loads(done.stderr or "null")
        except ValueError:
            doc = None
        shown = shlex.join(["bridge", *args])
        observed = {"exit": done.returncode, "stderr": done.stderr.strip()[:200] or None}
        good = done.returncode == expect
        if status is not None:
            now = stack.query("SELECT status FROM threads WHERE thread_id = ?", (tid,))[0][0]
            observed["thread_status"] = now
            good = good and now == status
        ev.check(f"{label}: `{shown}` exits {expect}", good, observed)
        return doc

    thread = ["--thread-id", tid]
    doc = run("inspect (read-only)", 0, "inspect-thread", *thread, status="active")
    ev.check("inspect shows participants and cursors", doc and len(doc["thread"]["participants"]) == 2,
             doc and [p["agent_id"] for p in doc["thread"]["participants"]])
    run("escalate", 0, "escalate-thread", *thread, "--reason", "pilot: stuck on a flaky test", *actor,
        status="blocked")
    doc = run("get owner (none yet)", 0, "get-escalation-owner", *thread)
    ev.check("no owner right after escalation", doc and doc.get("owner_agent_id") is None, doc)
    run("assign owner", 0, "assign-escalation-owner", *thread, "--owner-agent-id", "op-reviewer", "--reason",
        "reviewer knows the test", *actor)
    run("assign again is refused (CONFLICT: already owned)", 1, "assign-escalation-owner", *thread,
        "--owner-agent-id", "op-executioner", "--reason", "again", *actor)
    run("reassign owner", 0, "reassign-escalation-owner", *thread, "--owner-agent-id", "op-executioner",
        "--reason", "executioner takes it", *actor)
    doc = run("get owner", 0, "get-escalation-owner", *thread)
    ev.check("owner is the reassigned agent", doc and doc.get("owner_agent_id") == "op-executioner", doc)
    run("unblock by a non-owner without override is refused (owner rule)", 1, "unblock-thread", *thread,
        "--reason", "let me", *actor, status="blocked")
    run("unblock with human_override", 0, "unblock-thread", *thread, "--reason", "human_override: test fixed",
        *actor, status="active")
    run("override-close without the human_override: prefix is refused", 1, "override-close-thread", *thread,
        "--reason", "done", *actor, status="active")
    run("override-close", 0, "override-close-thread", *thread, "--reason", "human_override: pilot finished",
        *actor, status="closed")
    reply = call(stack, coord, "post_message", thread_id=tid, schema_version=1, kind="chat", body="late")
    ev.check("the closed thread refuses writes over HTTP (409 THREAD_CLOSED)",
             (reply.status, reply.code) == (409, "THREAD_CLOSED"), brief(reply))
    run("escalating a closed thread is refused (transition)", 1, "escalate-thread", *thread, "--reason", "again",
        *actor, status="closed")
    run("inspect an unknown thread -> not found", 3, "inspect-thread", "--thread-id", "thr_doesnotexist")
    run("usage error (missing --reason)", 2, "escalate-thread", *thread)
    unusable = stack.bridge("inspect-thread", *thread, "--db", str(stack.server.log_path / "bridge.db"), "--json")
    ev.check("database unavailable (its directory is a file): `bridge inspect-thread` exits 4",
             unusable.returncode == 4 and "UNAVAILABLE" in unusable.stderr,
             {"exit": unusable.returncode, "stderr": unusable.stderr.strip()[:200]})
    # rollback step 1 of the seed: freeze thread creation, reads keep working, unfreeze
    run("freeze thread creation", 0, "freeze", "--reason", "readiness: rollback step 1", *actor)
    frozen = call(stack, coord, "create_thread", title="while frozen", type="conversation", participants=["x"])
    health = request(stack, "GET", "/health")
    readable = call(stack, coord, "get_thread", thread_id=tid)
    ev.check("while frozen: create_thread -> 503 frozen, reads and /health work",
             (frozen.status, frozen.reason) == (503, "frozen") and readable.status == 200 and health.status == 200
             and health.body.get("frozen"), {"create": brief(frozen), "read": readable.status,
                                             "health.frozen": health.body.get("frozen")})
    run("unfreeze", 0, "unfreeze", "--reason", "readiness: verified", *actor)
    after = call(stack, coord, "create_thread", title="after unfreeze", type="conversation", participants=["x"])
    ev.check("after unfreeze: create_thread -> 200", after.status == 200, brief(after))
    events = stack.query("SELECT operation, outcome, actor_role FROM audit_events WHERE actor = 'human:readiness'"
                         " ORDER BY audit_id")
    ev.facts["audit"] = events
    operations = {(op, outcome) for op, outcome, _ in events}
    ev.check("every operator mutation is audited (refusals too), role operator",
             len(events) >= 11 and {r for _, _, r in events} == {"operator"}
             and any(outcome == "refused" for _, outcome in operations), sorted(operations))
    return ev


def project_root() -> Path:
    """The source checkout holding ops/ (and tests/, runbooks/, benchmarks/)."""
    return Path(__file__).resolve().parent.parent
