"""Database maintenance: integrity and invariant checks (both engines); online backup (apsw backup API), restore and
vacuum of a SQLite file. A PostgreSQL database refuses the file operations, naming the PostgreSQL tool that does
the job."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from bridge.domain.location import parse
from bridge.errors import InvalidArgument
from bridge.store.db import connect
from bridge.store.migrate import latest_version, recorded_version
from bridge.store.rows import rows

# Each invariant is a query returning offending rows (empty = holds), in SQL both engines run.
INVARIANTS: dict[str, str] = {
    "gapless_seqs": """SELECT t.thread_id, t.latest_seq, COUNT(m.seq) AS messages, COALESCE(MAX(m.seq), 0) AS max_seq
                       FROM threads t LEFT JOIN messages m ON m.thread_id = t.thread_id
                       GROUP BY t.thread_id, t.latest_seq
                       HAVING COUNT(m.seq) != t.latest_seq OR COALESCE(MAX(m.seq), 0) != t.latest_seq""",
    "blocked_has_open_escalation": """SELECT t.thread_id, t.status FROM threads t
                       WHERE (t.status = 'blocked') != EXISTS (SELECT 1 FROM escalations e
                             WHERE e.thread_id = t.thread_id AND e.closed_at IS NULL)""",
    "cursors_within_thread": """SELECT c.thread_id, c.agent_id, c.last_read_seq, t.latest_seq FROM read_cursors c
                       JOIN threads t ON t.thread_id = c.thread_id WHERE c.last_read_seq > t.latest_seq""",
    "finished_jobs_have_finish_time": """SELECT trigger_id, status FROM trigger_jobs
                       WHERE status IN ('delivered', 'resumed', 'spawned', 'failed') AND finished_at IS NULL""",
}
# The checks PostgreSQL needs no query for: it keeps its files intact and enforces foreign keys itself.
SQLITE_CHECKS = ("integrity", "foreign_keys")


def check(db: Path | str) -> dict[str, Any]:
    """Schema version and the invariants, plus integrity_check and foreign_key_check on a SQLite file; `ok` only
    when all pass. `db` is a SQLite path or a `--db` value; an unreachable PostgreSQL database raises CannotOpen."""
    location = parse(str(db))
    if location.path is not None:
        return _check_sqlite(location.path)
    from bridge.store.postgres import connection  # only bridges on PostgreSQL import psycopg

    with connection(location.url or "") as conn:
        return _verdict(conn, ["schema_version", *INVARIANTS], [])


def _verdict(conn: Any, checks: list[str], problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Add the schema version and the invariants (read in one snapshot) to the `problems` found so far."""
    version = recorded_version(conn)
    broken: dict[str, list[dict[str, Any]]] = {}
    if version == latest_version():  # the invariants' tables exist only in a current schema
        with _snapshot(conn):
            broken = {name: rows(conn, sql) for name, sql in INVARIANTS.items()}
    else:
        problems.append({"check": "schema_version", "found": version, "expected": latest_version()})
    problems += [{"check": name, "found": found[:20]} for name, found in broken.items() if found]
    return {"ok": not problems, "schema_version": version, "problems": problems, "checks": checks}


@contextlib.contextmanager
def _snapshot(conn: Any) -> Iterator[None]:
    """One read transaction, so the invariants see one state of a database that is being written."""
    postgres = getattr(conn, "dialect", "sqlite") == "postgresql"
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if postgres else "BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK" if postgres else "COMMIT")


def _check_sqlite(path: Path) -> dict[str, Any]:
    checks = [*SQLITE_CHECKS, "schema_version", *INVARIANTS]
    try:
        conn = connect(path)
        conn.execute("PRAGMA schema_version").fetchall()  # reads the header: a non-SQLite file fails here
    except (apsw.NotADBError, apsw.CorruptError) as exc:
        return {"ok": False, "schema_version": None, "problems": [{"check": "integrity", "found": [str(exc)]}],
                "checks": checks}
    try:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        foreign = [list(r) for r in conn.execute("PRAGMA foreign_key_check")]
        problems: list[dict[str, Any]] = []
        if integrity != ["ok"]:
            problems.append({"check": "integrity", "found": integrity[:20]})
        if foreign:
            problems.append({"check": "foreign_keys", "found": foreign[:20]})
        return _verdict(conn, checks, problems)
    except (apsw.NotADBError, apsw.CorruptError) as exc:  # damage past the header surfaces while scanning
        return {"ok": False, "schema_version": None, "problems": [{"check": "integrity", "found": [str(exc)]}],
                "checks": checks}
    finally:
        conn.close()


def database_file(db: str, operation: str, file: str = "bridge.dump") -> Path:
    """The SQLite file `db` names, for an operation on the file (`backup`, `restore`, `vacuum`); a PostgreSQL
    database refuses it (InvalidArgument) with the PostgreSQL command that does the job. `file` is the archive
    the command writes or reads."""
    location = parse(db)
    if location.path is not None:
        return location.path
    url, archive = shlex.quote(str(location)), shlex.quote(file)
    command = {
        "backup": f"pg_dump --format=custom --file={archive} {url}",
        "restore": f"pg_restore --clean --if-exists --no-owner --dbname={url} {archive}",
        "vacuum": f"vacuumdb --analyze --dbname={url}",
    }[operation]
    advice = {
        "backup": f"back it up with {command} and verify a restored copy with bridge db check --db <restored database>",
        "restore": f"stop the bridge, restore a pg_dump archive with {command}, then verify it with "
                   f"bridge db check --db {url}",
        "vacuum": f"its autovacuum reclaims space on its own (to run it now: {command})",
    }[operation]
    raise InvalidArgument(f"bridge db {operation} works on a SQLite file; {location} is a PostgreSQL database: "
                          f"{advice}", {"database": str(location), "engine": location.engine, "command": command})


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
