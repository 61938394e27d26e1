"""Database maintenance: integrity and invariant checks, online backup (apsw backup API), restore, vacuum."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw

from bridge.store.db import connect
from bridge.store.migrate import latest_version
from bridge.store.rows import rows

# Each invariant is a query returning offending rows (empty = holds).
INVARIANTS: dict[str, str] = {
    "gapless_seqs": """SELECT t.thread_id, t.latest_seq, COUNT(m.seq) AS messages, COALESCE(MAX(m.seq), 0) AS max_seq
                       FROM threads t LEFT JOIN messages m ON m.thread_id = t.thread_id GROUP BY t.thread_id
                       HAVING COUNT(m.seq) != t.latest_seq OR COALESCE(MAX(m.seq), 0) != t.latest_seq""",
    "blocked_has_open_escalation": """SELECT t.thread_id, t.status FROM threads t
                       WHERE (t.status = 'blocked') != EXISTS (SELECT 1 FROM escalations e
                             WHERE e.thread_id = t.thread_id AND e.closed_at IS NULL)""",
    "cursors_within_thread": """SELECT c.thread_id, c.agent_id, c.last_read_seq, t.latest_seq FROM read_cursors c
                       JOIN threads t ON t.thread_id = c.thread_id WHERE c.last_read_seq > t.latest_seq""",
    "finished_jobs_have_finish_time": """SELECT trigger_id, status FROM trigger_jobs
                       WHERE status IN ('delivered', 'resumed', 'spawned', 'failed') AND finished_at IS NULL""",
}


def check(path: Path | str) -> dict[str, Any]:
    """integrity_check, foreign_key_check, schema version and the invariants; `ok` only when all pass."""
    checks = ["integrity", "foreign_keys", "schema_version", *INVARIANTS]
    try:
        conn = connect(path)
        conn.execute("PRAGMA schema_version").fetchall()  # reads the header: a non-SQLite file fails here
    except (apsw.NotADBError, apsw.CorruptError) as exc:
        return {"ok": False, "schema_version": None, "problems": [{"check": "integrity", "found": [str(exc)]}],
                "checks": checks}
    try:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        foreign = [list(r) for r in conn.execute("PRAGMA foreign_key_check")]
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        broken: dict[str, list[dict[str, Any]]] = {}
        if version == latest_version():  # the invariants' tables exist only in a current schema
            conn.execute("BEGIN")
            try:
                broken = {name: rows(conn, sql) for name, sql in INVARIANTS.items()}
            finally:
                conn.execute("COMMIT")
    except (apsw.NotADBError, apsw.CorruptError) as exc:  # damage past the header surfaces while scanning
        return {"ok": False, "schema_version": None, "problems": [{"check": "integrity", "found": [str(exc)]}],
                "checks": checks}
    finally:
        conn.close()
    problems = []
    if integrity != ["ok"]:
        problems.append({"check": "integrity", "found": integrity[:20]})
    if foreign:
        problems.append({"check": "foreign_keys", "found": foreign[:20]})
    if version != latest_version():
        problems.append({"check": "schema_version", "found": version, "expected": latest_version()})
    problems += [{"check": name, "found": found[:20]} for name, found in broken.items() if found]
    return {"ok": not problems, "schema_version": version, "problems": problems, "checks": checks}


def backup(source: Path | str, target: Path | str) -> dict[str, Any]:
    """Copy a live database with SQLite's online backup API in one step, then fsync the copy."""
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists; choose a new file")
    src = connect(source)
    dest = apsw.Connection(str(target))
    try:
        with dest.backup("main", src, "main") as step:
            step.step(-1)  # one step: small steps restart whenever the source is written (TRAPS.md)
        dest.execute("PRAGMA journal_mode=DELETE").fetchall()  # a self-contained single file
        pages = dest.execute("PRAGMA page_count").fetchall()[0][0]
    finally:
        dest.close()
        src.close()
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())
    return {"backup": str(target), "pages": pages, "bytes": target.stat().st_size}


def restore(backup_file: Path | str, target: Path | str) -> dict[str, Any]:
    """Replace the database's content with a backup's, through the backup API (a transaction on the target)."""
    verdict = check(backup_file)
    if not verdict["ok"]:
        raise ValueError(f"backup {backup_file} fails its checks: {verdict['problems']}")
    src = apsw.Connection(str(backup_file), flags=apsw.SQLITE_OPEN_READONLY)
    dest = connect(target)
    try:
        with dest.backup("main", src, "main") as step:
            step.step(-1)
    finally:
        src.close()
        dest.close()
    return {"restored_from": str(backup_file), "database": str(target), "check": check(target)["ok"]}


def vacuum(path: Path | str, *, busy_timeout: float = 5.0) -> dict[str, Any]:
    """Rebuild the database file (reclaims free pages)."""
    conn = connect(path, busy_timeout=busy_timeout)
    try:
        before = Path(path).stat().st_size
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return {"database": str(path), "bytes_before": before, "bytes_after": Path(path).stat().st_size}
