"""Drill for runbooks/service-unavailable.md: the bridge process dies (`kill -9`); restart; nothing acked is lost."""

from __future__ import annotations

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

MESSAGES = 5


@drill("service-unavailable", "Service unavailable: the bridge process crashed",
       injects="kill -9 of the running `bridge serve` process",
       verifies="/health fails; doctor and offline CLI reads work; after a restart /ready is 200, the worker ticks, "
                "every acknowledged message is present and gapless, retries replay; db check ok")
def run(ctx: DrillContext) -> None:
    server, coord, rev, thread_id = ctx.set_up("a bridge with acknowledged messages", "survives a crash")
    acked = [ctx.post(rev, thread_id, f"finding {i}", idempotency_key=f"finding-{i}") for i in range(1, MESSAGES + 1)]
    port = server.port

    ctx.fault("kill -9 the bridge process (a crash: no shutdown code runs)", pid=server.pid)
    ctx.run(["kill", "-9", str(server.pid)])
    ctx.wait_for(lambda: not server.alive(), "the bridge process is gone", 10)

    ctx.step("1. Detect: /health does not answer")
    health = ctx.http("GET", "/health", server=server, timeout=3)
    ctx.check(health.status is None, "GET /health fails (connection refused)", error=health.error)
    post = ctx.api("post_message", rev, server=server, thread_id=thread_id, schema_version=1, kind="chat",
                   body="during the outage", idempotency_key="outage-1")
    ctx.check(post.status is None, "clients cannot post (no acknowledgement: they must retry)", error=post.error)

    ctx.step("2. Diagnose: doctor and the operator CLI work on the database file with the server down")
    doctor = ctx.bridge("doctor", "--db", DB, "--port", str(port), "--json").json()
    checks = {c["check"]: c for c in doctor["checks"]}
    ctx.check(doctor["ok"] and "is free" in checks["port"]["detail"], "bridge doctor: database ok, the port is free "
              "(nothing listens: the process is gone, not hung)", port=checks["port"], database=checks["database"])
    threads = ctx.bridge("threads", "--db", DB, "--json").json()["threads"]
    ctx.check([t["latest_seq"] for t in threads] == [MESSAGES], "bridge threads reads the database offline",
              latest_seq=[t["latest_seq"] for t in threads])

    ctx.step("3. Recover: start the bridge again on the same database")
    ctx.serve("server-restarted")

    ctx.step("4. Verify: ready, and every acknowledged message is there, in order")
    ready = ctx.http("GET", "/ready")
    ctx.check(ready.status == 200 and ready.body["ready"] is True, "/ready answers 200", body=ready.body)
    ctx.wait_for(lambda: (ctx.http("GET", "/health", record=False).body["worker"]["last_tick_age_seconds"]
                          or 99) < 5, "/health: the worker ticks again", 15)
    page = ctx.ok("read_messages", coord, thread_id=thread_id, since_seq=0, limit=200)
    got = [(m["message_id"], m["seq"], m["body"]) for m in page["messages"]]
    want = [(a["message_id"], a["seq"], f"finding {a['seq']}") for a in acked]
    ctx.check(got == want, "every acknowledged message survived the crash, gapless", messages=len(got))
    replay = ctx.post(rev, thread_id, f"finding {MESSAGES}", idempotency_key=f"finding-{MESSAGES}")
    ctx.check(replay["replayed"] is True and replay["message_id"] == acked[-1]["message_id"],
              "a client retry of an acknowledged post is a replay, not a duplicate", replay=replay)
    retry = ctx.post(rev, thread_id, "during the outage", idempotency_key="outage-1")
    ctx.check(retry["replayed"] is False and retry["seq"] == MESSAGES + 1,
              "the post refused during the outage goes through on retry", seq=retry["seq"])
    ctx.bridge("db", "check", "--db", DB)
    inspected = ctx.bridge("inspect-thread", "--db", DB, "--thread-id", thread_id, "--json").json()
    ctx.check(inspected["thread"]["latest_seq"] == MESSAGES + 1, "inspect-thread: latest seq = the last acknowledged "
              "message", latest_seq=inspected["thread"]["latest_seq"])

