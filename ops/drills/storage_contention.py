"""Drill for runbooks/storage-contention.md: another process holds the database's write lock past the busy timeout."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

BUSY_TIMEOUT = {"BRIDGE_BUSY_TIMEOUT": "300ms"}
# A stray writer: opens the database, takes the write lock (BEGIN IMMEDIATE) and never commits (bounded: 120 s).
HOLDER = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10); "
          "c.execute('BEGIN IMMEDIATE'); print('LOCK HELD', flush=True); time.sleep(120)")


def holders(ctx: DrillContext) -> tuple[str, list[int]]:
    """PIDs with the database file open: `fuser ./bridge.db` when installed, else the same from /proc."""
    if shutil.which("fuser"):
        done = ctx.run(["fuser", DB], expect=None)
        return "fuser", sorted(int(p) for p in done.stdout.split() if p.strip().isdigit())
    target = ctx.db.resolve()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(Path(os.readlink(fd)) == target for fd in (proc / "fd").iterdir()):
                found.add(int(proc.name))
        except OSError:
            continue
    ctx.observe("fuser is not installed: /proc/<pid>/fd scanned instead")
    return "/proc", sorted(found)


@drill("storage-contention", "Storage lock/contention: writes time out on a held database lock",
       injects="a second process holding BEGIN IMMEDIATE on bridge.db past BRIDGE_BUSY_TIMEOUT (300 ms)",
       verifies="writes get 503 UNAVAILABLE database_busy with Retry-After and write nothing; reads and /health "
                "work; metric and log line; fuser finds the holder; after kill the retry is a first write; gapless; "
                "db check")
def run(ctx: DrillContext) -> None:
    server, coord, rev, thread_id = ctx.set_up("a bridge with a 300 ms busy timeout (default 5 s) and one message",
                                               "contention", env=BUSY_TIMEOUT)
    ctx.post(rev, thread_id, "before the lock")

    ctx.fault("another process opens bridge.db, runs BEGIN IMMEDIATE and never commits")
    holder = ctx.start("lock-holder", [sys.executable, "-c", HOLDER, DB])
    ctx.wait_for(lambda: "LOCK HELD" in holder.log_text(), "the stray writer holds the write lock", 15)

    ctx.step("1. Detect: writes answer 503 UNAVAILABLE (database_busy) with Retry-After; reads keep working")
    refused = ctx.api("post_message", rev, thread_id=thread_id, schema_version=1, kind="chat", body="during the lock",
                      idempotency_key="during-lock")
    ctx.check(refused.status == 503 and refused.code == "UNAVAILABLE" and refused.reason == "database_busy"
              and refused.headers.get("retry-after") == "1", "post_message -> 503 UNAVAILABLE, reason database_busy, "
              "Retry-After: 1", status=refused.status, envelope=refused.body, headers=refused.headers)
    read = ctx.api("read_messages", rev, thread_id=thread_id, since_seq=0)
    ctx.check(read.status == 200 and read.body["latest_seq"] == 1, "read_messages still answers 200 (WAL readers "
              "are not blocked)", status=read.status)
    health = ctx.http("GET", "/health")
    ctx.check(health.status == 200, "/health still answers 200", body=health.body)
    ctx.check_metric("bridge_requests_total", 1, command="post_message", code="UNAVAILABLE")
    logged = server.log_events("request", command="post_message", code="UNAVAILABLE")
    ctx.check(len(logged) == 1, "one JSON log line: event request, code UNAVAILABLE", line=logged[:1])

    ctx.step("2. Diagnose: who else holds the database file?")
    tool, pids = holders(ctx)
    bridge = server.pids  # `bridge serve` and the serving processes it forked
    strangers = [p for p in pids if p not in bridge]
    ctx.check(holder.pid in pids and strangers == [holder.pid], f"{tool} lists the bridge and one stranger: the "
              "stray writer", pids=pids, server=bridge, stray=holder.pid)
    shown = ctx.run(["ps", "-o", "pid=,args=", "-p", ",".join(map(str, strangers))])
    ctx.check("BEGIN IMMEDIATE" in shown.stdout, "ps shows what the stranger is", ps=shown.stdout.strip()[:300])

    ctx.step("3. Recover: stop the stray writer (its transaction rolls back, the lock is released)")
    ctx.run(["kill", str(holder.pid)])
    ctx.wait_for(lambda: not holder.alive(), "the stray writer exited", 10)

    ctx.step("4. Verify: the refused write goes through on retry, and had written nothing")
    retry = ctx.post(rev, thread_id, "during the lock", idempotency_key="during-lock")
    ctx.check(retry["replayed"] is False and retry["seq"] == 2, "the retry is a first write (seq 2): the refused "
              "attempt wrote nothing", retry=retry)
    page = ctx.ok("read_messages", coord, thread_id=thread_id, since_seq=0)
    ctx.check([m["seq"] for m in page["messages"]] == [1, 2], "the thread is gapless: 1, 2")
    ctx.check_metric("bridge_requests_total", 2, command="post_message", code="OK")
    ctx.bridge("db", "check", "--db", DB)

