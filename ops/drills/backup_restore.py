"""Drill for runbooks/backup-restore.md: an online backup under write load, then the live file is damaged and
restored from that backup."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import apsw
from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

BACKUP = "./backups/bridge-drill.db"
SETTINGS = {"BRIDGE_WRITE_QUOTA_PER_MIN": "0", "BRIDGE_LOOP_GUARD_TURNS": "0"}


class WriteLoad:
    """A client posting to one thread back to back (bounded: 60 s) and remembering every acknowledged message."""

    def __init__(self, ctx: DrillContext, token: str, thread_id: str):
        self.ctx, self.token, self.thread_id = ctx, token, thread_id
        self.acked: list[dict[str, Any]] = []
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            reply = self.ctx.api("post_message", self.token, record=False, thread_id=self.thread_id,
                                 schema_version=1, kind="chat", body=f"load {n}", idempotency_key=f"load-{n}")
            if reply.status == 200:
                self.acked.append(reply.body)
            else:
                self.refused += 1
                time.sleep(0.05)

    def __enter__(self) -> WriteLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def messages_in(path: Path) -> list[tuple[str, int]]:
    """The (message_id, seq) pairs of a database file, read-only (a backup is not to be touched)."""
    with contextlib.closing(apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT message_id, seq FROM messages ORDER BY seq")]


def damage(ctx: DrillContext) -> dict[str, Any]:
    """Overwrite the b-tree pages of the messages table (not page 1) with garbage, as a failing disk would."""
    [(page_size, pages, root)] = ctx.query("SELECT (SELECT page_size FROM pragma_page_size), "
                                           "(SELECT page_count FROM pragma_page_count), "
                                           "(SELECT rootpage FROM sqlite_master WHERE name = 'messages')")
    targets = sorted({root, *range(max(2, pages - 3), pages + 1)} - {1})
    with open(ctx.db, "r+b") as handle:
        for page in targets:
            handle.seek((page - 1) * page_size)
            handle.write(bytes([0xA5]) * 64)
    return {"page_size": page_size, "page_count": pages, "overwritten_pages": targets}


@drill("backup-restore", "Backup and restore",
       injects="an online `bridge db backup` under continuous posting, then garbage written over b-tree pages of the "
               "stopped database",
       verifies="no post fails during the backup; the backup passes db check and is a prefix of the acknowledged "
                "messages; db check detects the damage (exit 1); db restore + db check; the restarted bridge "
                "serves exactly the backup, new seqs continue gaplessly; the restore is audited")
def run(ctx: DrillContext) -> None:
    server, coord, rev, thread_id = ctx.set_up("a bridge taking a steady stream of posts", "backup", env=SETTINGS)

    with WriteLoad(ctx, rev, thread_id) as load:
        ctx.wait_for(lambda: len(load.acked) >= 50, "the load has 50 acknowledged posts", 30)
        ctx.step("1. Back up online, under write load")
        ctx.run(["mkdir", "-p", "backups"])
        before = len(load.acked)
        ctx.bridge("db", "backup", "--db", DB, "--out", BACKUP)
        after = len(load.acked)
        ctx.wait_for(lambda: len(load.acked) >= after + 20, "the load keeps going after the backup", 30)
    ctx.observe("posts acknowledged around the backup", before_backup=before, after_backup=after,
                total=len(load.acked), refused=load.refused)
    ctx.check(load.refused == 0, "the backup did not make any post fail", refused=load.refused)

    ctx.step("2. Verify the backup on its own")
    ctx.bridge("db", "check", "--db", BACKUP)
    saved = messages_in(ctx.workdir / BACKUP)
    acked = [(m["message_id"], m["seq"]) for m in load.acked]
    ctx.check(before <= len(saved) <= after and saved == acked[:len(saved)], "the backup holds a consistent prefix "
              "of the acknowledged messages (everything acked before the backup started)", in_backup=len(saved),
              acked_before=before, acked_after=after)

    ctx.fault("the database file is damaged under the bridge: garbage over b-tree pages (written while it was "
              "stopped for a moment, as a failing disk would), then the bridge runs on it again")
    ctx.stop(server)
    damaged = damage(ctx)
    ctx.observe("pages overwritten", **damaged)
    server = ctx.serve("server-on-damaged-file", env=SETTINGS)

    ctx.step("3. Detect: reads fail with 500 INTERNAL (CorruptError in the log); bridge db check fails")
    reply = ctx.api("read_messages", coord, thread_id=thread_id, since_seq=0, limit=200)
    ctx.check(reply.status == 500 and reply.code == "INTERNAL", "read_messages -> 500 INTERNAL", envelope=reply.body)
    ctx.check_metric("bridge_requests_total", 1, code="INTERNAL")
    logged = server.log_events("internal_error")
    ctx.check(len(logged) == 1 and "CorruptError" in logged[0].get("exception", ""), "JSON log line: event "
              "internal_error with apsw.CorruptError", request_id=logged[0].get("request_id") if logged else None)
    ready = ctx.http("GET", "/ready")
    ctx.observe("/ready does not see page damage (it only reads the header)", status=ready.status)
    verdict = ctx.bridge("db", "check", "--db", DB, "--json", expect=1).json()
    ctx.check(not verdict["ok"] and any(p["check"] == "integrity" for p in verdict["problems"]),
              "bridge db check: integrity problems, exit 1", problems=[p["check"] for p in verdict["problems"]])
    ctx.kill(server, "the bridge exited on SIGTERM")
    ctx.run(["cp", "-p", "bridge.db", "bridge.db.damaged"])

    ctx.step("4. Restore from the backup (the bridge is stopped)")
    ctx.bridge("db", "restore", "--db", DB, "--from", BACKUP, "--yes")
    ctx.bridge("db", "check", "--db", DB)
    ctx.serve("server-restored", env=SETTINGS)

    ctx.step("5. Verify")
    ready = ctx.http("GET", "/ready")
    ctx.check(ready.status == 200, "/ready answers 200", body=ready.body)
    restored = [(m["message_id"], m["seq"]) for m in ctx.read_back(coord, thread_id)]
    ctx.check(restored == saved, "the thread reads back exactly the backup's messages", messages=len(restored))
    listed = ctx.bridge("threads", "--db", DB, "--json").json()["threads"]
    ctx.check([t["latest_seq"] for t in listed] == [len(saved)], "bridge threads: latest_seq = the backup's",
              latest_seq=[t["latest_seq"] for t in listed])
    ctx.observe("recovery point: messages acknowledged after the backup are gone (re-post them from the clients' "
                "side)", lost=len(acked) - len(saved))
    new = ctx.post(rev, thread_id, "after the restore")
    ctx.check(new["seq"] == len(saved) + 1, "new posts continue the sequence without a gap", seq=new["seq"])
    trail = ctx.bridge("audit", "--db", DB, "--operation", "db_restore", "--json").json()["events"]
    ctx.check(len(trail) == 1 and trail[0]["actor"].startswith("human:"), "the restore is in the audit trail",
              event=trail[:1])

