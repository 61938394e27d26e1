"""Drill for runbooks/authz-misconfiguration.md: a drifted workspace setting, then a token with the wrong role."""

from __future__ import annotations

import sys

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.evidence import jwt_part
from bridge_ops.drills.framework import drill

DRIFT = {"BRIDGE_WORKSPACE": "team-b"}
# The runbook's one-liner: the jti claim of a token (decoded, not verified).
JTI_OF = ('import base64, json, sys; p = sys.argv[1].split(".")[1]; '
          'print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["jti"])')


@drill("authz-misconfiguration", "Authorization misconfiguration: workspace drift, wrong role",
       injects="a restart with BRIDGE_WORKSPACE=team-b (tokens are for 'default'); a coordinator token minted with "
               "--role participant",
       verifies="403 WORKSPACE_MISMATCH with bridge_auth_failures_total and log lines; /health names the served "
                "workspace; refusals audited; the fixed restart serves the same tokens; 403 FORBIDDEN "
                "role_not_allowed audited; a re-issued coordinator token works and the wrong one is revoked")
def run(ctx: DrillContext) -> None:
    good, coord, rev, thread_id = ctx.set_up("a bridge serving workspace 'default' with a thread", "authz")
    ctx.post(rev, thread_id, "hello")
    ctx.stop(good)

    ctx.fault("configuration drift: the bridge is restarted with BRIDGE_WORKSPACE=team-b", env=DRIFT)
    drifted = ctx.serve("server-drifted", env=DRIFT)

    ctx.step("A1. Detect: every call answers 403 WORKSPACE_MISMATCH; bridge_auth_failures_total rises")
    for token in (rev, coord, rev):
        reply = ctx.api("read_messages", token, thread_id=thread_id, since_seq=0)
        ctx.check(reply.status == 403 and reply.code == "WORKSPACE_MISMATCH", "read_messages -> 403 "
                  "WORKSPACE_MISMATCH", status=reply.status, envelope=reply.body)
    ctx.check_metric("bridge_auth_failures_total", 3, reason="workspace_mismatch")
    ctx.check_metric("bridge_requests_total", 3, code="WORKSPACE_MISMATCH")
    logged = drifted.log_events("request", code="WORKSPACE_MISMATCH")
    ctx.check(len(logged) == 3, "JSON log lines with \"code\": \"WORKSPACE_MISMATCH\"", line=logged[:1])

    ctx.step("A2. Diagnose: the workspace the server serves vs the one in the tokens")
    health = ctx.http("GET", "/health")
    token_workspace = reply.body["error"]["details"]["token_workspace"]
    ctx.check(health.body["workspace"] == "team-b" and token_workspace == "default", "/health says \"workspace\": "
              "\"team-b\"; the error details say the token is for \"default\"", health=health.body,
              token_workspace=token_workspace)
    refusals = ctx.bridge("audit", "--db", DB, "--workspace", "team-b", "--operation", "read_messages",
                          "--json").json()["events"]
    ctx.check(len(refusals) == 3 and {e["outcome"] for e in refusals} == {"refused"}
              and {e["reason"] for e in refusals} == {"WORKSPACE_MISMATCH"},
              "the refusals are in the audit trail (under the workspace the server was told to serve)",
              events=[{k: e[k] for k in ("actor", "operation", "outcome", "reason")} for e in refusals])

    args = ctx.run(["ps", "-o", "args=", "-p", str(drifted.pid)]).stdout
    environ = ctx.run(["sh", "-c", f"tr '\\0' '\\n' < /proc/{drifted.pid}/environ | grep ^BRIDGE_"]).stdout
    ctx.check("--workspace" not in args and "BRIDGE_WORKSPACE=team-b" in environ.splitlines(), "the drift is in the "
              "service's environment, not on its command line", args=args.strip(), environ=environ.splitlines())

    ctx.step("A3. Recover: restart with the intended workspace")
    ctx.kill(drifted, "the drifted server exited on SIGTERM")
    ctx.serve("server-fixed")

    ctx.step("A4. Verify")
    health = ctx.http("GET", "/health")
    ctx.check(health.body["workspace"] == "default", "/health says \"workspace\": \"default\"", body=health.body)
    page = ctx.ok("read_messages", rev, thread_id=thread_id, since_seq=0)
    ctx.check(page["latest_seq"] == 1, "the same tokens work again and the data is there",
              latest_seq=page["latest_seq"])
    failures = ctx.metric("bridge_auth_failures_total")
    ctx.check(not failures, "no auth failures on the fixed server", value=failures)

    ctx.step("B1. Fault: the coordinator was given a participant token")
    ctx.fault("`bridge token issue` ran with --role participant for the coordinator agent")
    wrong = ctx.bridge("token", "issue", "--db", DB, "--agent-id", "coordinator", "--role",
                       "participant").stdout.strip()
    reply = ctx.api("create_thread", wrong, title="needs a coordinator", type="workflow", participants=["reviewer"])
    ctx.check(reply.status == 403 and reply.code == "FORBIDDEN" and reply.reason == "role_not_allowed",
              "create_thread -> 403 FORBIDDEN, reason role_not_allowed", envelope=reply.body)
    ctx.check_metric("bridge_requests_total", 1, command="create_thread", code="FORBIDDEN")

    ctx.step("B2. Diagnose: the refusal names the role")
    refusals = ctx.bridge("audit", "--db", DB, "--operation", "create_thread", "--json").json()["events"]
    refused = [e for e in refusals if e["outcome"] == "refused"]
    ctx.check(len(refused) == 1 and refused[0]["actor"] == "coordinator" and refused[0]["actor_role"] == "participant",
              "the audit trail shows coordinator acting with role participant",
              event={k: refused[0][k] for k in ("actor", "actor_role", "reason", "details")} if refused else None)

    ctx.step("B3. Recover: issue a coordinator token (and revoke the wrong one)")
    claims = ctx.bridge("token", "issue", "--db", DB, "--agent-id", "coordinator", "--role", "coordinator",
                        "--json").json()
    fixed = claims["token"]
    wrong_jti = ctx.run([sys.executable, "-c", JTI_OF, wrong]).stdout.strip()
    ctx.check(wrong_jti == jwt_part(wrong, 1)["jti"], "the wrong token's jti, read from its claims", jti=wrong_jti)
    ctx.bridge("token", "revoke", "--db", DB, "--jti", wrong_jti, "--reason", "issued with the wrong role")

    ctx.step("B4. Verify")
    created = ctx.api("create_thread", fixed, title="needs a coordinator", type="workflow", participants=["reviewer"])
    ctx.check(created.status == 200, "create_thread works with the coordinator token", status=created.status)
    revoked = ctx.api("read_messages", wrong, thread_id=thread_id, since_seq=0)
    ctx.check(revoked.status == 401 and revoked.reason == "revoked", "the wrong token is revoked",
              envelope=revoked.body)

