"""Drill for runbooks/rollback.md: a bad release is live; freeze, diagnose, revert, verify, unfreeze."""

from __future__ import annotations

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

BAD_RELEASE = {"BRIDGE_ISSUER": "bridge-next"}  # the "release" expects an issuer no client token carries


@drill("rollback", "Rollback: freeze writes, diagnose, revert, verify, unfreeze",
       injects="a bad release (a restart with a drifted issuer setting) refusing every valid token",
       verifies="freeze refuses create_thread while reads/health/inspect work; the revert restores service; the "
                "freeze survives the restart; smoke post/read; db check; unfreeze; both audited")
def run(ctx: DrillContext) -> None:
    good, coord, rev, thread_id = ctx.set_up("the known-good release serving a thread",
                                             "before the release", "server-good")
    ctx.post(rev, thread_id, "review started")
    ctx.stop(good)

    ctx.fault("deploy a bad release: the new process expects issuer 'bridge-next' (config drift)", env=BAD_RELEASE)
    bad = ctx.serve("server-bad-release", env=BAD_RELEASE)

    ctx.step("Detect: clients get UNAUTHORIZED, bridge_requests_total{code=UNAUTHORIZED} rises")
    for _ in range(3):
        reply = ctx.api("post_message", rev, thread_id=thread_id, schema_version=1, kind="chat", body="still there?")
        ctx.check(reply.status == 401 and reply.code == "UNAUTHORIZED", "the bad release refuses valid tokens",
                  status=reply.status, code=reply.code, reason=reply.reason)
    refused = ctx.metric("bridge_requests_total", code="UNAUTHORIZED")
    ctx.check(refused is not None and refused >= 3, "bridge_requests_total{code=\"UNAUTHORIZED\"} counts them",
              value=refused)
    issuer_failures = ctx.metric("bridge_auth_failures_total", reason="issuer")
    ctx.check(issuer_failures is not None and issuer_failures >= 3, "bridge_auth_failures_total{reason=\"issuer\"}",
              value=issuer_failures)
    logged = bad.log_events("request", code="UNAUTHORIZED")
    ctx.check(len(logged) >= 3, "JSON log lines with \"code\": \"UNAUTHORIZED\"", sample=logged[:1])

    ctx.step("1. Freeze new thread creation")
    ctx.bridge("freeze", "--db", DB, "--reason", "rollback: drill bad release")
    health = ctx.http("GET", "/health")
    ctx.check(health.status == 200 and health.body["frozen"] == "create", "/health shows \"frozen\": \"create\"",
              body=health.body)
    ctx.check_metric("bridge_frozen", 1, mode="create")

    ctx.step("2. Diagnose with reads only")
    ready = ctx.http("GET", "/ready")
    ctx.check(ready.status == 200, "/ready answers 200 (the database is fine: the release is the problem)",
              body=ready.body)
    inspected = ctx.bridge("inspect-thread", "--db", DB, "--thread-id", thread_id, "--json").json()
    ctx.check(inspected["thread"]["latest_seq"] == 1, "inspect-thread works during the freeze",
              latest_seq=inspected["thread"]["latest_seq"])

    ctx.step("3. Revert: stop the bad release (SIGTERM) and start the last known-good one")
    ctx.observe("`git checkout <known-good tag>` and re-install are outside a drill: the known-good release is the "
                "installed code, started without the drifted setting")
    exit_code = ctx.kill(bad, "the bad release exited on SIGTERM")
    ctx.check(exit_code == 0, "the bad release shut down cleanly (exit 0)")
    ctx.serve("server-reverted")

    ctx.step("4. Verify before lifting the freeze")
    ctx.bridge("db", "check", "--db", DB)
    blocked = ctx.api("create_thread", coord, title="during the freeze", type="workflow", participants=["reviewer"])
    ctx.check(blocked.status == 503 and blocked.code == "UNAVAILABLE" and blocked.reason == "frozen"
              and "retry-after" in blocked.headers, "the freeze survived the restart: create_thread is refused",
              status=blocked.status, reason=blocked.reason)
    posted = ctx.post(rev, thread_id, "smoke after revert")
    page = ctx.ok("read_messages", coord, thread_id=thread_id, since_seq=0)
    seqs = [m["seq"] for m in page["messages"]]
    ctx.check(seqs == [1, 2] and posted["seq"] == 2, "smoke: valid tokens work again, the thread reads back gapless",
              seqs=seqs)

    ctx.step("5. Lift the freeze")
    ctx.bridge("unfreeze", "--db", DB, "--reason", "rollback verified")
    health = ctx.http("GET", "/health")
    ctx.check(health.body["frozen"] is None, "/health shows \"frozen\": null", body=health.body)
    created = ctx.api("create_thread", coord, title="after the rollback", type="workflow", participants=["reviewer"])
    ctx.check(created.status == 200, "create_thread works again", status=created.status)
    trail = ctx.bridge("audit", "--db", DB, "--operation", "freeze", "--json").json()["events"]
    trail += ctx.bridge("audit", "--db", DB, "--operation", "unfreeze", "--json").json()["events"]
    ctx.check({e["operation"] for e in trail} == {"freeze", "unfreeze"}
              and all(e["actor"].startswith("human:") for e in trail), "freeze and unfreeze are in the audit trail",
              events=[{k: e[k] for k in ("operation", "actor", "reason")} for e in trail])

