"""Drill for runbooks/token-failure.md: a leaked token revoked, a corrupted token, and a lost signing key."""

from __future__ import annotations

import json
import sys

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.evidence import jwt_part
from bridge_ops.drills.framework import drill

from bridge.testing.client import Reply

KEY = "bridge.data/signing-key.pem"
KEY_BACKUP = "./signing-key.backup.pem"
# The runbook's one-liner: the kid in a token's header (decoded, not verified).
KID_OF = ('import base64, json, sys; p = sys.argv[1].split(".")[0]; '
          'print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["kid"])')


def issue(ctx: DrillContext, agent_id: str, role: str = "participant") -> str:
    """`bridge token issue` (the runbook's command) -> the token."""
    return ctx.bridge("token", "issue", "--db", DB, "--agent-id", agent_id, "--role", role).stdout.strip()


def read(ctx: DrillContext, token: str, thread_id: str) -> Reply:
    return ctx.api("read_messages", token, thread_id=thread_id, since_seq=0)


@drill("token-failure", "Token issuer / validation failure: leaked, damaged, key lost",
       injects="a token revoked by agent (leak); a tampered and a truncated token; the signing key file deleted and "
               "the bridge restarted with a new key",
       verifies="401 with reasons revoked / bad_signature / malformed / unknown_key and bridge_auth_failures_total "
                "by reason; a re-issued token works at once; jwks kid differs; restoring the key (0600) and "
                "restarting makes every existing token valid again while the revocation holds")
def run(ctx: DrillContext) -> None:
    ctx.step("Set-up: a bridge, tokens from `bridge token issue`, and an offline copy of the signing key")
    server = ctx.serve()
    ctx.run(["cp", "-p", KEY, KEY_BACKUP])
    coord = ctx.token("coordinator", "coordinator")
    leaked = issue(ctx, "reviewer")
    thread_id = ctx.new_thread(coord, "tokens")
    ctx.post(leaked, thread_id, "hello")

    # ---------------------------------------------------------------------------------------------- A: revocation
    ctx.step("A. A token leaked: revoke every token of the agent, issue a fresh one")
    ctx.fault("the reviewer's token was pasted into a public log: the operator revokes the agent's tokens")
    ctx.bridge("token", "revoke", "--db", DB, "--agent-id", "reviewer", "--reason", "token leaked in a CI log")
    reply = read(ctx, leaked, thread_id)
    ctx.check(reply.status == 401 and reply.code == "UNAUTHORIZED" and reply.reason == "revoked"
              and reply.headers.get("www-authenticate", "").startswith("Bearer"), "the leaked token -> 401 "
              "UNAUTHORIZED, reason revoked, WWW-Authenticate: Bearer", envelope=reply.body)
    ctx.check_metric("bridge_auth_failures_total", 1, reason="revoked")
    fresh = issue(ctx, "reviewer")
    reply = read(ctx, fresh, thread_id)
    ctx.check(reply.status == 200, "the token issued right after the revocation works", status=reply.status,
              envelope=reply.body if reply.status != 200 else None)
    ctx.check(read(ctx, leaked, thread_id).status == 401, "the leaked token stays refused")

    # ---------------------------------------------------------------------------------------------- B: corruption
    ctx.step("B. A token damaged in transit (truncated, or a character changed)")
    ctx.fault("the agent's environment holds a damaged copy of its token")
    header, claims, signature = fresh.split(".")
    tampered = f"{header}.{claims}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    truncated = fresh[: len(fresh) // 2]
    reply = read(ctx, tampered, thread_id)
    ctx.check(reply.status == 401 and reply.reason == "bad_signature", "a changed signature -> 401, reason "
              "bad_signature", envelope=reply.body)
    reply = read(ctx, truncated, thread_id)
    ctx.check(reply.status == 401 and reply.reason == "malformed", "a truncated token -> 401, reason malformed",
              envelope=reply.body)
    for reason in ("bad_signature", "malformed"):
        ctx.check_metric("bridge_auth_failures_total", 1, reason=reason)
    ctx.check(read(ctx, fresh, thread_id).status == 200, "the intact token still works: re-deliver it (or issue a new "
              "one)")

    # ---------------------------------------------------------------------------------------------- C: issuer
    ctx.step("C. The local issuer's signing key is lost: the bridge starts with a new key")
    ctx.fault("the data directory is lost (restored without bridge.data/): the key file disappears and the bridge "
              "is restarted", key=KEY)
    ctx.stop(server)
    ctx.run(["rm", KEY])
    ctx.serve("server-new-key")
    reply = read(ctx, fresh, thread_id)
    ctx.check(reply.status == 401 and reply.reason == "unknown_key", "every existing token -> 401, reason "
              "unknown_key", envelope=reply.body)
    read(ctx, coord, thread_id)
    unknown = ctx.metric("bridge_auth_failures_total", reason="unknown_key")
    ctx.check(unknown == 2, "bridge_auth_failures_total{reason=\"unknown_key\"} counts every agent", value=unknown)

    ctx.step("C. Diagnose: the key id in the tokens vs the bridge's published key")
    published = json.loads(ctx.bridge("token", "jwks", "--db", DB).stdout)["keys"][0]["kid"]
    in_token = ctx.run([sys.executable, "-c", KID_OF, fresh]).stdout.strip()
    ctx.check(in_token == jwt_part(fresh, 0)["kid"], "the one-liner reads the token's kid", kid=in_token)
    ctx.check(published != in_token, "`bridge token jwks` publishes a kid the tokens do not carry",
              published=published, in_token=in_token)

    ctx.step("C. Recover: put the original key back (mode 0600), restart")
    assert ctx.server is not None
    ctx.kill(ctx.server, "the bridge exited on SIGTERM")
    ctx.run(["cp", "-p", KEY_BACKUP, KEY])
    ctx.run(["chmod", "600", KEY])
    doctor = ctx.bridge("doctor", "--db", DB, "--json").json()
    key_check = next(c for c in doctor["checks"] if c["check"] == "signing key")
    ctx.check(key_check["ok"], "bridge doctor: the signing key file has mode 600", check=key_check)
    ctx.serve("server-key-restored")

    ctx.step("C. Verify")
    for name, token in (("reviewer", fresh), ("coordinator", coord)):
        ctx.check(read(ctx, token, thread_id).status == 200, f"the {name}'s existing token works again")
    ctx.check(read(ctx, leaked, thread_id).status == 401, "the revocation of the leaked token still holds")
    failures = ctx.metric("bridge_auth_failures_total", reason="unknown_key")
    ctx.check(not failures, "no unknown_key failures on the restored bridge", value=failures)

