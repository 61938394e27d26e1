"""`bridge db migrate|check|backup|restore|vacuum|copy` and `bridge doctor`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import click

from bridge.auth.keys import KeyFile
from bridge.cli.common import database_error, db_options, load_settings, opened, operator_call, require_database
from bridge.cli.options import FullHelpGroup
from bridge.cli.output import emit, fail, table
from bridge.cli.progress import Progress
from bridge.errors import BridgeError, Conflict, InvalidArgument, Unavailable
from bridge.services import maintenance as maintenance_service
from bridge.settings import Settings
from bridge.store import copy as copy_store
from bridge.store import maintenance
from bridge.store.db import unavailable_from
from bridge.store.engines import CannotOpen
from bridge.store.migrate import latest_version


@click.group(cls=FullHelpGroup)
def db() -> None:
    """Database maintenance (works with the server running)."""


@db.command("migrate")
@db_options
def migrate(db: str | None, workspace: str | None, as_json: bool) -> None:
    """Apply pending schema migrations, creating the database if it does not exist (every start does this too)."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json, create=True) as parts:
        version = parts.bridge.store.schema_version()
    emit({"database": str(settings.location), "schema_version": version, "latest": latest_version()}, as_json)


@db.command("check")
@db_options
def check(db: str | None, workspace: str | None, as_json: bool) -> None:
    """Schema version and invariants (gapless seqs, escalations, cursors), and a SQLite file's integrity and foreign
    keys; exit 1 if bad."""
    settings = load_settings(db=db, workspace=workspace)
    require_database(settings, as_json)
    with _storage_errors(settings, as_json), Progress(1, as_json=as_json).step(f"check {settings.location}") as step:
        verdict = maintenance.check(settings.db)
        step.verdict = "ok" if verdict["ok"] else "FAILED"
    emit(verdict, as_json, "ok: " + ", ".join(verdict["checks"]) if verdict["ok"] else
         "\n".join(f"FAILED {p['check']}: {p['found']}" for p in verdict["problems"]))
    sys.exit(0 if verdict["ok"] else 1)


@contextlib.contextmanager
def _storage_errors(settings: Settings, as_json: bool) -> Iterator[None]:
    """A locked, full or unopenable database file, or an unreachable database server, is exit 4 (database
    unavailable), not a traceback."""
    try:
        yield
    except (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError, apsw.ReadOnlyError,
            apsw.CantOpenError) as exc:
        fail(unavailable_from(exc), as_json)
    except CannotOpen as exc:
        fail(database_error(settings, exc), as_json)


def _database_file(settings: Settings, as_json: bool, operation: str, file: str = "bridge.dump") -> Path:
    """The SQLite file of a file operation; exit 2 on a PostgreSQL database, naming the tool to use instead."""
    try:
        return maintenance.database_file(settings.db, operation, file)
    except InvalidArgument as error:
        fail(error, as_json)
        raise  # not reached: fail() exits


def _audited(settings: Settings, as_json: bool, actor: str | None, operation: str, result: dict[str, Any]) -> None:
    """Open the (backed up or restored) database and audit the operation in it."""
    with opened(settings, as_json) as parts:
        maintenance_service.record(parts.bridge, operator_call(settings, actor), operation, result)


@db.command("backup")
@click.option("--out", "out", required=True, help="New file to write the backup to.")
@click.option("--actor", default=None, help="Operator identity (default human:<os user>).")
@db_options
def backup(out: str, actor: str | None, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Online backup of a SQLite file through its backup API (safe while the bridge is writing); PostgreSQL: pg_dump."""
    settings = load_settings(db=db, workspace=workspace)
    path = _database_file(settings, as_json, "backup", out)
    require_database(settings, as_json)
    if not Path(out).expanduser().resolve().parent.is_dir():
        fail(InvalidArgument(f"no directory for --out {out}: create it first"), as_json)
    try:
        with _storage_errors(settings, as_json), Progress(1, as_json=as_json).step(f"backup {path} to {out}"):
            result = maintenance.backup(path, out)
    except FileExistsError as exc:
        fail(Conflict(str(exc)), as_json)
    _audited(settings, as_json, actor, "db_backup", result)
    emit(result, as_json)


@db.command("restore")
@click.option("--from", "source", required=True, help="Backup file made by `bridge db backup`.")
@click.option("--yes", is_flag=True, help="Confirm replacing the database's content.")
@click.option("--actor", default=None, help="Operator identity (default human:<os user>).")
@db_options
def restore(source: str, yes: bool, actor: str | None, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Replace a SQLite file's content with a checked backup (stop the bridge first); PostgreSQL: pg_restore."""
    settings = load_settings(db=db, workspace=workspace)
    path = _database_file(settings, as_json, "restore", source)
    if not yes:
        fail(InvalidArgument("restoring replaces every row: pass --yes to confirm"), as_json)
    try:
        with _storage_errors(settings, as_json):
            result = maintenance.restore(source, path)
    except (ValueError, OSError) as exc:
        fail(InvalidArgument(str(exc)), as_json)
    _audited(settings, as_json, actor, "db_restore", result)
    emit(result, as_json)


@db.command("vacuum")
@db_options
def vacuum(db: str | None, workspace: str | None, as_json: bool) -> None:
    """Rebuild a SQLite file to reclaim free pages (PostgreSQL's autovacuum does this itself)."""
    settings = load_settings(db=db, workspace=workspace)
    path = _database_file(settings, as_json, "vacuum")
    require_database(settings, as_json)
    with _storage_errors(settings, as_json):
        result = maintenance.vacuum(path, busy_timeout=settings.busy_timeout)
    emit(result, as_json)


@db.command("copy")
@click.option("--from", "source", required=True, help="The bridge's database: a SQLite file or a postgresql:// URL.")
@click.option("--to", "destination", required=True,
              help="An empty database to copy it into: a new file, or a PostgreSQL database without bridge rows.")
@click.option("--actor", default=None, help="Operator identity (default human:<os user>).")
@click.option("--workspace", default=None,
              help="The workspace whose audit trail records the copy [env BRIDGE_WORKSPACE; default: default].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def copy(source: str, destination: str, actor: str | None, workspace: str | None, as_json: bool) -> None:
    """Copy a whole bridge between SQLite and PostgreSQL (either way) into an empty database, in one transaction,
    verified per table by row counts and checksums; exit 1 (nothing kept) if any table differs. Stop the bridge
    first, or it keeps writing to the source only. The copy is audited in the destination (`db_copy`)."""
    settings = {end: load_settings(db=value, workspace=workspace)
                for end, value in (("from", source), ("to", destination))}
    progress = Progress(1, as_json=as_json)
    try:
        key_files = (KeyFile(settings["from"].data_dir), KeyFile(settings["to"].data_dir))
        report = copy_store.copy_database(source, destination, key_files, progress.note)
    except BridgeError as error:
        fail(error, as_json)
    except CannotOpen as exc:
        fail(Unavailable(f"cannot use the database: {exc}", {"reason": exc.reason}), as_json)
    report |= {"not_copied": [f"agent folders under {settings['from'].data_dir / 'agents'}"]}
    if report["ok"]:
        ends = {end: str(settings[end].location) for end in ("from", "to")}  # passwords shown as ***
        _audited(settings["to"], as_json, actor, "db_copy", {
            **ends, "tables": len(report["tables"]), "rows": sum(t["destination_rows"] for t in report["tables"]),
            "signing_key": report["signing_key"]})
    verdict = "ok: copied and verified" if report["ok"] else \
        f"FAILED: {', '.join(report['differing'])} differ; the destination was left empty"
    emit(report, as_json, "\n".join([
        table(report["tables"], ["table", "source_rows", "destination_rows", "checksum_equal", "how"]),
        f"reset: {', '.join(report['reset'])} (the worker folds every message once more)",
        f"signing key: {report['signing_key']}", f"not copied: {report['not_copied'][0]}", verdict]))
    sys.exit(0 if report["ok"] else 1)


@click.command()
@click.option("--host", default=None, help="Address the service will bind [env BRIDGE_HOST].")
@click.option("--port", type=int, default=None, help="Port the service will bind [env BRIDGE_PORT].")
@db_options
def doctor(host: str | None, port: int | None, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Preflight: Python, dependencies, tmux, database, key file permissions, port. Exit 1 if a required check fails."""
    from bridge.doctor import run_checks

    settings = load_settings(db=db, workspace=workspace, host=host, port=port)
    results = run_checks(settings)
    healthy = all(r["ok"] for r in results if r["required"])
    rows = [{**r, "ok": "ok" if r["ok"] else ("FAIL" if r["required"] else "warn")} for r in results]
    emit({"ok": healthy, "checks": results}, as_json, table(rows, ["check", "ok", "detail"]))
    sys.exit(0 if healthy else 1)
