"""Drill for runbooks/store-move.md: a running pilot moves from its SQLite file to PostgreSQL and back, losing
nothing: freeze, copy, verify, switch, unfreeze, twice."""

from __future__ import annotations

from typing import Any

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

from bridge.domain.location import redacted
from bridge.testing.postgres import PostgresServer

BACK = "./bridge-back.db"  # the SQLite file the pilot moves back to


def _frozen_post_refused(ctx: DrillContext, token: str, thread_id: str) -> None:
    reply = ctx.api("post_message", token, thread_id=thread_id, schema_version=1, kind="chat", body="during the move")
    ctx.check(reply.status == 503 and reply.code == "UNAVAILABLE" and reply.reason == "frozen",
              "a post during the move is refused with 503 UNAVAILABLE (frozen): the client retries later",
              status=reply.status, code=reply.code, reason=reply.reason)


def _move(ctx: DrillContext, source: str, target: str, shown: str, token: str, thread_id: str,
          acked: list[dict[str, Any]]) -> None:
    """freeze -> copy -> verify -> switch -> unfreeze, from `source` to `target` (the runbook's steps 1-5)."""
    ctx.step(f"1. Freeze every write on {redacted(source)}")
    ctx.bridge("freeze", "--all", "--db", source, "--reason", f"moving the bridge to {shown}")
    _frozen_post_refused(ctx, token, thread_id)
    ctx.check(len(ctx.read_back(token, thread_id)) == len(acked), "reads keep working during the freeze")

    ctx.step(f"2. Copy to {shown} (one snapshot; every table checked by count and checksum)")
    copied = ctx.bridge("db", "copy", "--from", source, "--to", target, "--json").json()
    ctx.observe("what was copied", tables=len(copied.get("tables", [])), ok=copied.get("ok"))

    ctx.step("3. Verify the copy on its own")
    verdict = ctx.bridge("db", "check", "--db", target, "--json").json()
    ctx.check(verdict["ok"], "bridge db check passes on the copy", problems=verdict.get("problems"))

    ctx.step("4. Switch: stop the bridge on the old store, start it on the new one")
    ctx.kill(ctx.server, "the old server exited on SIGTERM")
    ctx.serve(f"server-on-{shown.split()[0].lower()}", db=target)
    ready = ctx.http("GET", "/ready")
    ctx.check(ready.status == 200, "/ready answers 200 on the new store", body=ready.body)
    health = ctx.http("GET", "/health")
    ctx.check(health.body.get("frozen") == "all", "the freeze came along with the data: still frozen", body=health.body)
    back = [(m["message_id"], m["seq"], m["body"]) for m in ctx.read_back(token, thread_id)]
    ctx.check(back == [(m["message_id"], m["seq"], m["body"]) for m in acked],
              "every acknowledged message reads back from the new store, same ids and seqs", messages=len(back))

    ctx.step("5. Unfreeze on the new store")
    ctx.bridge("unfreeze", "--db", target, "--reason", f"moved to {shown}")
    new = ctx.post(token, thread_id, f"first post on {shown}")
    ctx.check(new["seq"] == len(acked) + 1, "new posts continue the sequence without a gap", seq=new["seq"])
    old = ctx.bridge("threads", "--db", source, "--json").json()["threads"]
    ctx.check([t["latest_seq"] for t in old] == [len(acked)], "the new post went to the new store only: the old "
              "store stands as it was at the freeze", old_latest_seq=[t["latest_seq"] for t in old])
    acked.append({**new, "body": f"first post on {shown}"})


@drill("store-move", "Move a pilot from SQLite to PostgreSQL and back",
       injects="a planned move of a running pilot's data between stores (a throwaway PostgreSQL server on "
               "127.0.0.1), while clients keep posting",
       verifies="posts during the move are refused (503 frozen), reads keep working; db copy checks every table; "
                "db check passes on the copy; after each switch every acknowledged message reads back with its "
                "id and seq, the signing key still verifies the clients' tokens, seqs continue gaplessly; the "
                "freezes, copies and unfreezes are audited in the store the pilot ends on")
def run(ctx: DrillContext) -> None:
    ctx.env["XDG_DATA_HOME"] = str(ctx.workdir / "data-home")  # PostgreSQL bridges keep their key under it
    _, _, reviewer, thread_id = ctx.set_up("a pilot on its SQLite file", "before the move")
    acked = [{**ctx.post(reviewer, thread_id, f"finding {n}"), "body": f"finding {n}"} for n in range(1, 6)]
    with PostgresServer(durable=True) as postgres:
        url = postgres.create_database("bridge_pilot")
        ctx.observe("the PostgreSQL server (throwaway, this drill's own)", url=url, pid=postgres.pid)
        ctx.fault("the pilot outgrows its file: a planned move to PostgreSQL while the clients keep working")
        _move(ctx, DB, url, "PostgreSQL", reviewer, thread_id, acked)
        ctx.fault("the pilot moves back to a single file (a new SQLite database)")
        _move(ctx, url, BACK, "SQLite again", reviewer, thread_id, acked)
        ctx.step("6. The audit trail of the store the pilot ends on holds both moves")
        trail = ctx.bridge("audit", "--db", BACK, "--json").json()["events"]
        moves = [e["operation"] for e in trail if e["operation"] in ("freeze", "db_copy", "unfreeze")]
        ctx.check(moves == ["freeze", "db_copy", "unfreeze"] * 2, "freeze, copy and unfreeze of both moves, in order",
                  operations=moves)
        ctx.stop(ctx.server)
