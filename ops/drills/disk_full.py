"""Drill for runbooks/disk-full.md: the bridge can no longer grow its files; writes fail cleanly, nothing acked is lost.

The fault is real and confined to the bridge process: its RLIMIT_FSIZE is lowered while it runs (`prlimit --pid`),
so any write that would grow a file (the WAL first) past the limit fails in the kernel (EFBIG), exactly where a full
disk fails (ENOSPC). "Freeing space" is raising the limit again.
"""

from __future__ import annotations

import resource
import shutil

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

from bridge.testing.processes import Proc

BODY = "x" * 32 * 1024  # each message grows the WAL by about 40 KiB
HEADROOM = 256 * 1024
MAX_POSTS = 200


def set_fsize(ctx: DrillContext, server: Proc, limit: int | None) -> None:
    """`prlimit --pid <pid> --fsize=<limit>:` for `bridge serve` and each serving process it forked (the soft
    limit; back to the hard one, unlimited, when None)."""
    _, hard = resource.prlimit(server.pid, resource.RLIMIT_FSIZE)
    value = hard if limit is None else limit
    shown = "unlimited" if value == resource.RLIM_INFINITY else str(value)
    for pid in server.pids:
        if shutil.which("prlimit"):
            ctx.run(["prlimit", f"--pid={pid}", f"--fsize={shown}:"])
        else:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (value, hard))
            ctx.observe(f"prlimit(1) not installed: setrlimit(RLIMIT_FSIZE, {shown}) applied to pid {pid}")
    softs = [resource.prlimit(pid, resource.RLIMIT_FSIZE)[0] for pid in server.pids]
    ctx.check(set(softs) == {value}, f"the bridge processes' file-size limit is now {shown}", soft=softs)


@drill("disk-full", "Disk full: the database cannot grow",
       injects="RLIMIT_FSIZE of the running bridge lowered (prlimit) so its WAL cannot grow: EFBIG, as on a full "
               "disk",
       verifies="writes get 503 UNAVAILABLE with Retry-After and write nothing; reads work; metric and log line; "
                "after the limit is lifted the retry is a first write; every acknowledged message intact; /ready; "
                "db check")
def run(ctx: DrillContext) -> None:
    server, coord, rev, thread_id = ctx.set_up("a bridge with acknowledged messages", "disk full")
    acked = [ctx.post(rev, thread_id, f"small {i}", idempotency_key=f"small-{i}") for i in range(3)]

    sizes = {p.name: p.stat().st_size for p in ctx.workdir.glob("bridge.db*")}
    sizes["server.log"] = server.log_path.stat().st_size
    limit = max(sizes.values()) + HEADROOM
    ctx.fault(f"the disk fills up: the bridge may not grow any file past {limit} bytes", sizes=sizes)
    set_fsize(ctx, server, limit)

    ctx.step("1. Detect: writes answer 503 UNAVAILABLE, reads keep working")
    refused = None
    for i in range(MAX_POSTS):
        reply = ctx.api("post_message", rev, record=False, thread_id=thread_id, schema_version=1, kind="chat",
                        body=f"big {i} {BODY}", idempotency_key=f"big-{i}")
        if reply.status == 200:
            acked.append(reply.body)
            continue
        refused = (i, reply)
        break
    ctx.check(refused is not None, "a write is refused once the WAL cannot grow", accepted_big_posts=len(acked) - 3)
    assert refused is not None
    index, reply = refused
    ctx.check(reply.status == 503 and reply.code == "UNAVAILABLE" and reply.reason in ("disk_full", "file_too_large")
              and "retry-after" in reply.headers, "post_message -> 503 UNAVAILABLE (disk_full / file_too_large) with "
              "Retry-After", status=reply.status, envelope=reply.body)
    again = ctx.api("post_message", rev, thread_id=thread_id, schema_version=1, kind="chat", body=f"big {index} {BODY}",
                    idempotency_key=f"big-{index}")
    ctx.check(again.status == 503, "a retry while the disk is full is refused too", status=again.status)
    read = ctx.api("read_messages", coord, thread_id=thread_id, since_seq=0, limit=1)
    ctx.check(read.status == 200 and read.body["latest_seq"] == len(acked), "reads still work and show only the "
              "acknowledged messages", latest_seq=read.body and read.body.get("latest_seq"), acked=len(acked))
    unavailable = ctx.metric("bridge_requests_total", command="post_message", code="UNAVAILABLE")
    ctx.check(unavailable is not None and unavailable >= 2, "bridge_requests_total{command=\"post_message\","
              "code=\"UNAVAILABLE\"} rises", value=unavailable)
    logged = server.log_events("request", command="post_message", code="UNAVAILABLE")
    ctx.check(len(logged) >= 1, "JSON log lines: event request, code UNAVAILABLE", line=logged[:1])

    ctx.step("2. Diagnose: how much space is left next to the database")
    ctx.run(["df", "-h", "."])
    ctx.run(["du", "-ch", "bridge.db", "bridge.db-wal"])

    ctx.step("3. Recover: free space (here: lift the file-size limit)")
    set_fsize(ctx, server, None)

    ctx.step("4. Verify: the refused write goes through on retry; every acknowledged message is intact")
    retry = ctx.post(rev, thread_id, f"big {index} {BODY}", idempotency_key=f"big-{index}")
    ctx.check(retry["replayed"] is False and retry["seq"] == len(acked) + 1, "the retry is a first write: the refused "
              "attempts wrote nothing", seq=retry["seq"], acked=len(acked))
    seen = [(m["message_id"], m["seq"]) for m in ctx.read_back(coord, thread_id)]
    want = [(a["message_id"], a["seq"]) for a in acked] + [(retry["message_id"], retry["seq"])]
    ctx.check(seen == want, "every acknowledged message is there, gapless, and nothing else", messages=len(seen))
    ready = ctx.http("GET", "/ready")
    ctx.check(ready.status == 200, "/ready answers 200", body=ready.body)
    ctx.bridge("db", "check", "--db", DB)

    ctx.step("5. Afterwards: reclaim free pages")
    ctx.bridge("db", "vacuum", "--db", DB)
    after = ctx.post(rev, thread_id, "after the vacuum")
    ctx.check(after["seq"] == retry["seq"] + 1, "the bridge keeps writing after the vacuum", seq=after["seq"])

