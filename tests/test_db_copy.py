"""`bridge db copy`: a realistic bridge built through the services on SQLite goes to PostgreSQL and back to a new
SQLite file through the real CLI; every table reads back equal, the copy serves reads, takes new rows, and accepts
the original's tokens. A non-empty destination, an old source schema, a different signing key and a table that does
not check equal are refused, leaving the destination as it was (or empty)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import call_as

from bridge.auth.keys import KEY_FILE, load_key
from bridge.cli.main import cli
from bridge.domain.location import redacted
from bridge.domain.models import (
    AckReadInput,
    CreateThreadInput,
    HeartbeatSessionInput,
    InboxInput,
    ParticipantSpec,
    PostMessageInput,
    ReadMessagesInput,
    TriggerParticipantInput,
)
from bridge.services import messages as message_service
from bridge.services import operator as operator_service
from bridge.services import sessions as session_service
from bridge.services import threads as thread_service
from bridge.services import tokens as token_service
from bridge.services import triggers as trigger_service
from bridge.settings import Settings
from bridge.store import copy as copy_store
from bridge.store import triggers as trigger_store
from bridge.store.db import connect
from bridge.store.migrate import latest_version, migrations
from bridge.store.rows import table_names
from bridge.testing.database import audit_rows, reading, rows
from bridge.testing.tokens import Minter
from bridge.wiring import Parts, build

ENGINE_SPECIFIC = {"messages": {"commit_xid"}, "wake_folded": {"last_rowid"}}
OPERATOR = call_as("human:ops", "operator")
COORD, REV, DEV = call_as("coord", "coordinator"), call_as("rev"), call_as("dev")


def open_parts(db: str | Path) -> Parts:
    return build(Settings.load({"db": str(db)}, env={}))


def post(parts: Parts, sender: Any, thread_id: str, body: str, **fields: Any) -> dict[str, Any]:
    kind = "event" if "event_type" in fields.get("metadata", {}) else "chat"
    request = PostMessageInput(thread_id=thread_id, schema_version=1, kind=kind, body=body, **fields)
    return message_service.post_message(parts.bridge, sender, request)


def thread(parts: Parts, title: str) -> str:
    request = CreateThreadInput(title=title, type="workflow", participants=[
        "coord", ParticipantSpec(agent_id="rev", thread_role="reviewer"), "dev"])
    return str(thread_service.create_thread(parts.bridge, COORD, request)["thread_id"])


def populate(parts: Parts) -> dict[str, str]:
    """Threads with chat, findings (one closed), addressed messages, cursors, escalations (one closed), a session,
    a revocation, a trigger job with attempts, a runtime failure, a wake mark, a folded watermark, audit events."""
    review, blocked, quiet = thread(parts, "review"), thread(parts, "blocked"), thread(parts, "quiet")
    post(parts, COORD, review, "please review")
    finding = post(parts, REV, review, "bug", metadata={"event_type": "finding_reported", "finding_id": "F1"})
    post(parts, REV, review, "another", metadata={"event_type": "finding_reported", "finding_id": 2})
    post(parts, DEV, review, "fixed", in_reply_to=finding["message_id"],
         metadata={"event_type": "finding_resolved", "finding_id": "F1"})
    post(parts, COORD, review, "for rev", to=["rev"])
    post(parts, COORD, review, "for reviewers", to_role="reviewer")
    post(parts, DEV, quiet, "hello")
    message_service.ack_read(parts.bridge, REV, AckReadInput(thread_id=review, last_read_seq=2))
    operator_service.escalate(parts.bridge, OPERATOR, review, "stuck", "coord")
    operator_service.unblock(parts.bridge, OPERATOR, review, "human_override: moving again")
    operator_service.escalate(parts.bridge, OPERATOR, blocked, "needs a human", None)
    session_service.heartbeat_session(parts.bridge, DEV, HeartbeatSessionInput(
        session_id="dev-s1", runtime="claude_code", status="idle", resumable=True, cwd="/tmp"))
    token_service.revoke(parts.bridge, OPERATOR, "jti", "leaked-token", "leaked")
    job = trigger_service.trigger_participant(parts.bridge, COORD, TriggerParticipantInput(
        thread_id=review, target_agent_id="dev", reason="please fix"))["trigger_id"]

    def worker_rows(conn: Any) -> None:
        for stage, outcome in (("type", "typed"), ("ack", "retry")):
            trigger_store.insert_attempt(conn, {"trigger_id": job, "thread_id": review, "target_agent_id": "dev",
                                                "stage": stage, "outcome": outcome, "reason_code": None,
                                                "detail": "{}", "started_at": 1, "finished_at": 2})
        trigger_store.record_runtime_failure(conn, "default", "dev", "resume", 3)
        trigger_store.add_wake_mark(conn, review, "dev", 5, job, 4)
        trigger_store.fold_addressed(conn, 100)
    parts.bridge.store.write(worker_rows)
    return {"review": review, "blocked": blocked, "quiet": quiet}


def contents(db: str | Path) -> dict[str, list[str]]:
    """Every table's rows (but the engine-specific columns, the signing key's table and the audit events of copies),
    as sorted JSON texts."""
    with reading(db) as conn:
        names = [n for n in table_names(conn) if n not in copy_store.BOOKKEEPING | copy_store.KEPT_APART]
    found = {}
    for name in names:
        skip = ENGINE_SPECIFIC.get(name, set())
        found[name] = sorted(json.dumps({k: v for k, v in row.items() if k not in skip}, sort_keys=True)
                             for row in rows(db, f"SELECT * FROM {name}") if row.get("operation") != "db_copy")
    return found


def key_file(db: str | Path) -> Path:
    """The signing key file of the SQLite bridge at `db`."""
    return Settings.load({"db": str(db)}, env={}).data_dir / KEY_FILE


def run_copy(source: str | Path, destination: str | Path) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["db", "copy", "--from", str(source), "--to", str(destination), "--json"])
    return result.exit_code, json.loads(result.stdout or result.stderr)


def reads(parts: Parts, threads: dict[str, str]) -> list[Any]:
    """What agents read through the services: inboxes, messages, summaries."""
    seen: list[Any] = [message_service.inbox(parts.bridge, agent, InboxInput()) for agent in (COORD, REV, DEV)]
    for thread_id in threads.values():
        seen.append(message_service.read_messages(parts.bridge, REV, ReadMessagesInput(thread_id=thread_id)))
    return seen


@pytest.fixture
def original(tmp_path) -> tuple[Path, dict[str, str]]:
    """A populated bridge on SQLite (closed), and its threads."""
    db = tmp_path / "original.db"
    parts = open_parts(db)
    try:
        return db, populate(parts)
    finally:
        parts.close()


def test_sqlite_to_postgresql_to_sqlite_keeps_every_row(original, postgres_url, tmp_path):
    db, threads = original
    before = contents(db)
    assert all(before[t] for t in ("messages", "escalations", "sessions", "revocations", "trigger_attempts",
                                   "audit_events", "open_findings", "addressed_marks", "wake_marks"))
    code, report = run_copy(db, postgres_url)
    assert code == 0, report
    assert report["ok"] and report["signing_key"] == "copied"
    assert {e["table"] for e in report["tables"]} == set(before)
    back = tmp_path / "back" / "copy.db"
    code, report = run_copy(postgres_url, back)
    assert code == 0, report
    assert report["signing_key"] == "copied"
    for copy in (postgres_url, back):
        assert contents(copy) == before
        assert rows(copy, "SELECT last_rowid FROM wake_folded") == [{"last_rowid": 0}]
    # each copy is audited in its destination (which the next copy carries along), the password never shown
    first_copy = {"from": str(db), "to": redacted(postgres_url), "tables": len(before), "signing_key": "copied"}
    second_copy = {"from": redacted(postgres_url), "to": str(back), "tables": len(before), "signing_key": "copied"}
    assert [(e["actor_role"], e["outcome"], {k: e["details"][k] for k in first_copy})
            for e in audit_rows(postgres_url, operation="db_copy")] == [("operator", "ok", first_copy)]
    assert [{k: e["details"][k] for k in first_copy} for e in audit_rows(back, operation="db_copy")] == [
        first_copy, second_copy]
    source_rows = sum(len(table) for table in before.values())
    assert [e["details"]["rows"] for e in audit_rows(back, operation="db_copy")] == [
        source_rows, source_rows + 1]  # the second copy also carried the first one's audit event
    # the key went from the file into PostgreSQL's table and back into a file (mode 0600), never into SQLite
    original_key = key_file(db)
    assert rows(postgres_url, "SELECT name, private_pem FROM signing_keys") == [
        {"name": "local", "private_pem": original_key.read_text()}]
    assert key_file(back).read_bytes() == original_key.read_bytes()
    assert stat.S_IMODE(key_file(back).stat().st_mode) == 0o600
    assert rows(back, "SELECT name FROM signing_keys") == []

    token = Minter(load_key(original_key.parent), Settings.load({}, env={}))("rev")
    source, copied = open_parts(db), open_parts(back)
    pg = open_parts(postgres_url)
    try:
        assert reads(pg, threads) == reads(source, threads) == reads(copied, threads)
        for parts in (pg, copied):
            assert parts.verifier.verify(token).agent_id == "rev"
        # identities continue past the copied ids
        escalation = operator_service.escalate(pg.bridge, OPERATOR, threads["quiet"], "new on the copy", None)
        assert escalation["status"] == "blocked"
    finally:
        for parts in (source, copied, pg):
            parts.close()
    ids = rows(postgres_url, "SELECT escalation_id FROM escalations ORDER BY escalation_id")
    assert ids[-1]["escalation_id"] == len(before["escalations"]) + 1
    audits = rows(postgres_url, "SELECT audit_id, operation FROM audit_events ORDER BY audit_id")
    assert audits[-1]["audit_id"] == len(before["audit_events"]) + 2  # after the copy's own audit event


def test_a_destination_with_rows_is_refused_and_unchanged(original, tmp_path):
    db, _ = original
    other = tmp_path / "other.db"
    open_parts(other).close()
    thread_parts = open_parts(other)
    try:
        thread(thread_parts, "already here")
    finally:
        thread_parts.close()
    before, key = contents(other), (tmp_path / "other.data" / KEY_FILE).read_bytes()
    (tmp_path / "other.data" / KEY_FILE).unlink()  # no key conflict: the rows alone refuse it
    code, report = run_copy(db, other)
    assert code == 1
    assert report["error"]["code"] == "CONFLICT" and "not empty" in report["error"]["message"]
    assert contents(other) == before
    assert not (tmp_path / "other.data" / KEY_FILE).exists()
    assert key


def test_a_destination_with_another_signing_key_is_refused_before_anything(original, tmp_path):
    db, _ = original
    target = tmp_path / "new.db"
    (tmp_path / "new.data").mkdir()
    (tmp_path / "new.data" / KEY_FILE).write_bytes(b"another key")
    code, report = run_copy(db, target)
    assert code == 1
    assert report["error"]["code"] == "CONFLICT" and "signing key" in report["error"]["message"]
    assert not target.exists()


def test_a_source_behind_the_latest_schema_is_refused(tmp_path):
    old = tmp_path / "old.db"
    conn = connect(old)
    for number, _name, sql in migrations()[:-1]:
        conn.execute(sql)
        conn.execute(f"PRAGMA user_version={number}")
    conn.close()
    target = tmp_path / "new.db"
    code, report = run_copy(old, target)
    assert code == 1
    assert report["error"]["code"] == "CONFLICT"
    assert "bridge db migrate" in report["error"]["message"]
    assert report["error"]["details"] == {"schema_version": latest_version() - 1, "latest": latest_version()}
    assert not target.exists()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_table_that_does_not_check_equal_fails_and_keeps_nothing(original, tmp_path, monkeypatch, engine,
                                                                   request):
    db, _ = original
    target = request.getfixturevalue("postgres_url") if engine == "postgresql" else str(tmp_path / "new.db")
    copy_table = copy_store._copy_table

    def corrupting(src: Any, dst: Any, name: str) -> int:
        copied = copy_table(src, dst, name)
        if name == "threads":
            dst.execute("UPDATE threads SET title = 'changed on the way'")
        return copied
    monkeypatch.setattr(copy_store, "_copy_table", corrupting)
    code, report = run_copy(db, target)
    assert code == 1
    assert not report["ok"] and report["differing"] == ["threads"]
    if engine == "sqlite":
        assert not Path(target).exists()
    else:  # rolled back: the schema stays, empty, and a second copy into it works
        assert all(not found for found in contents(target).values() if found != ["{\"id\": 1}"])
        monkeypatch.setattr(copy_store, "_copy_table", copy_table)
        code, report = run_copy(db, target)
        assert code == 0 and report["ok"], report
        assert contents(target) == contents(db)


def test_compare_names_each_table_that_differs(original, tmp_path):
    db, _ = original
    twin = tmp_path / "twin.db"
    assert run_copy(db, twin)[0] == 0
    with reading(twin) as conn:
        conn.execute("UPDATE sessions SET cwd = '/elsewhere'")
    with reading(db) as source, reading(twin) as target:
        verdicts = copy_store.compare(source, target, ["sessions", "threads"])
    assert [(v["table"], v["checksum_equal"], v["source_rows"] == v["destination_rows"]) for v in verdicts] == [
        ("sessions", False, True), ("threads", True, True)]


def test_the_reset_wake_watermark_refolds_to_the_same_addressed_rows(original, postgres_url, tmp_path):
    db, _ = original
    back = tmp_path / "back.db"
    assert run_copy(db, postgres_url)[0] == 0
    assert run_copy(postgres_url, back)[0] == 0
    for copy in (postgres_url, back):
        parts = open_parts(copy)
        try:
            while parts.bridge.store.write(lambda conn: trigger_store.fold_addressed(conn, 2)):
                pass
            assert not parts.bridge.store.read(trigger_store.has_unfolded)
        finally:
            parts.close()
        assert contents(copy)["wake_addressed"] == contents(db)["wake_addressed"]
        assert rows(copy, "SELECT last_rowid FROM wake_folded") != [{"last_rowid": 0}]


def test_postgresql_to_postgresql_moves_the_key_table_to_table(original, postgres, postgres_url):
    db, _ = original
    assert run_copy(db, postgres_url)[0] == 0
    second = postgres.create_database()
    try:
        code, report = run_copy(postgres_url, second)
        assert code == 0 and report["signing_key"] == "copied", report
        assert rows(second, "SELECT private_pem FROM signing_keys") == [{"private_pem": key_file(db).read_text()}]
        token = Minter(load_key(key_file(db).parent), Settings.load({}, env={}))("rev")
        parts = open_parts(second)
        try:
            assert parts.verifier.verify(token).agent_id == "rev"
        finally:
            parts.close()
    finally:
        postgres.drop_database(second.rsplit("/", 1)[1])


def test_a_postgresql_destination_holding_another_key_is_refused_before_anything(original, postgres_url):
    db, _ = original
    open_parts(postgres_url).close()  # a server started there first: its own key, no rows
    held = rows(postgres_url, "SELECT private_pem FROM signing_keys")
    code, report = run_copy(db, postgres_url)
    assert code == 1
    assert report["error"]["code"] == "CONFLICT" and "signing key" in report["error"]["message"]
    assert rows(postgres_url, "SELECT private_pem FROM signing_keys") == held
    assert rows(postgres_url, "SELECT COUNT(*) AS n FROM threads") == [{"n": 0}]
