"""`bridge db check|migrate|backup|restore|vacuum` and `bridge doctor` on a PostgreSQL `--db`: the check runs the
same invariants as on a SQLite file; the file operations refuse, naming PostgreSQL's own tool and changing nothing;
no output ever shows the URL's password."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner, Result
from helpers import create_thread, post_as

from bridge.cli.main import cli
from bridge.domain.authz import Principal
from bridge.services.core import Call
from bridge.settings import Settings
from bridge.store.maintenance import INVARIANTS
from bridge.store.migrate import latest_version, record_version, recorded_version
from bridge.testing.database import reading, rows
from bridge.testing.processes import unused_port
from bridge.wiring import build

PASSWORD = "sekret-pw-13"
COORD = Call(Principal(agent_id="coord", workspace_id="default", role="coordinator", session_id="coord-s1"),
             request_id="seed")
ALICE = Call(Principal(agent_id="alice", workspace_id="default", role="participant", session_id="alice-s1"),
             request_id="seed")


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch, tmp_path):
    """Start from no BRIDGE_* variables, in a scratch directory."""
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    """A migrated database with one thread of two messages, reached as a role with a password (the test server
    trusts every local connection, so the password is only carried, which is what the redaction tests need)."""
    role = f"operator_{uuid.uuid4().hex[:12]}"
    with reading(postgres_url) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    parts = build(Settings.load({"db": postgres_url, "write_quota_per_min": 0, "loop_guard_turns": 0}, env={}),
                  create=True)
    try:
        thread_id = create_thread(parts, COORD, ("alice", "bob"), "t")
        post_as(parts, ALICE, thread_id, "one")
        post_as(parts, ALICE, thread_id, "two")
    finally:
        parts.close()
    split = urlsplit(postgres_url)
    yield urlunsplit(split._replace(netloc=f"{role}:{PASSWORD}@{split.hostname}:{split.port}"))
    with reading(postgres_url) as conn:
        conn.execute(f"DROP ROLE {role}")


def bridge(*args: str) -> Result:
    """One in-process `bridge` invocation; whatever it prints never holds the password."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert PASSWORD not in result.stdout + result.stderr, (args, result.stdout, result.stderr)
    return result


def checked(url: str, exit_code: int) -> dict[str, Any]:
    """`bridge db check --json`: its exit code, and its verdict (also printed as text without --json)."""
    result = bridge("db", "check", "--db", url, "--json")
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert bridge("db", "check", "--db", url).exit_code == exit_code
    return json.loads(result.stdout)


def content(url: str) -> dict[str, list[dict[str, Any]]]:
    return {table: rows(url, f"SELECT * FROM {table} ORDER BY 1") for table in ("threads", "messages", "audit_events")}


def test_check_passes_on_a_migrated_database_and_reports_broken_invariants(url):
    migrated = bridge("db", "migrate", "--db", url, "--json")
    assert migrated.exit_code == 0, migrated.stderr
    assert json.loads(migrated.stdout)["schema_version"] == latest_version()
    assert PASSWORD not in json.loads(migrated.stdout)["database"] and "***" in json.loads(migrated.stdout)["database"]

    healthy = checked(url, 0)
    assert healthy == {"ok": True, "schema_version": latest_version(), "problems": [],
                       "checks": ["schema_version", *INVARIANTS]}

    [thread] = rows(url, "SELECT thread_id FROM threads")
    with reading(url) as conn:
        conn.execute("DELETE FROM messages WHERE seq = 1")
        conn.execute("UPDATE threads SET status = 'blocked' WHERE thread_id = ?", (thread["thread_id"],))
    broken = checked(url, 1)
    assert broken["ok"] is False
    assert [p["check"] for p in broken["problems"]] == ["gapless_seqs", "blocked_has_open_escalation"]
    assert broken["problems"][1]["found"] == [{"thread_id": thread["thread_id"], "status": "blocked"}]


def test_check_reports_a_schema_that_is_not_current_and_migrates_nothing(url):
    with reading(url) as conn:
        record_version(conn, latest_version() - 1)
    verdict = checked(url, 1)
    assert verdict["problems"] == [{"check": "schema_version", "found": latest_version() - 1,
                                    "expected": latest_version()}]
    with reading(url) as conn:
        assert recorded_version(conn) == latest_version() - 1

    empty = f"empty_{uuid.uuid4().hex[:12]}"
    with reading(url) as conn:
        conn.execute(f"CREATE DATABASE {empty}")
    empty_url = url.rsplit("/", 1)[0] + "/" + empty
    try:
        assert checked(empty_url, 1)["problems"] == [{"check": "schema_version", "found": 0,
                                                      "expected": latest_version()}]
        assert rows(empty_url, "SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = 'public'") == [{"n": 0}]
    finally:
        with reading(url) as conn:
            conn.execute(f"DROP DATABASE {empty}")


def test_an_unreachable_server_is_unavailable_without_showing_the_password(url):
    split = urlsplit(url)
    gone = urlunsplit(split._replace(netloc=f"{split.username}:{PASSWORD}@127.0.0.1:{unused_port()}"))
    result = bridge("db", "check", "--db", gone, "--json")
    assert result.exit_code == 4 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "UNAVAILABLE" and "***" in error["message"]


@pytest.mark.parametrize(("command", "tool"), [
    (("db", "backup", "--out", "snap.dump"), "pg_dump --format=custom --file=snap.dump"),
    (("db", "restore", "--from", "snap.dump", "--yes"), "pg_restore"),
    (("db", "restore", "--from", "snap.dump"), "pg_restore"),
    (("db", "vacuum"), "vacuumdb"),
])
def test_file_operations_refuse_naming_the_postgresql_tool_and_change_nothing(url, tmp_path, command, tool):
    before = content(url)
    result = bridge(*command, "--db", url, "--json")
    assert result.exit_code == 2 and result.stdout == "", (result.stdout, result.stderr)
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert tool in error["message"] and tool in error["details"]["command"]
    assert "***" in error["details"]["command"]
    if tool != "vacuumdb":
        assert "bridge db check --db" in error["message"]  # how to verify what the tool restores
    assert error["details"]["engine"] == "postgresql"
    assert content(url) == before
    assert list(tmp_path.iterdir()) == []  # no file written (the scratch directory is the current one)
    plain = bridge(*command, "--db", url)
    assert plain.exit_code == 2 and tool in plain.stderr


def test_doctor_reports_the_database_line(url):
    port = str(unused_port())
    result = bridge("doctor", "--db", url, "--port", port, "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    database = checks["database"]
    assert database["ok"] is True and database["required"] is True
    assert f"schema {latest_version()}" in database["detail"] and "***" in database["detail"]
    assert result.exit_code == 0, result.stdout
    assert "schema" in bridge("doctor", "--db", url, "--port", port).stdout

    with reading(url) as conn:
        conn.execute("DELETE FROM messages WHERE seq = 2")
    sick = bridge("doctor", "--db", url, "--port", port, "--json")
    assert sick.exit_code == 1
    database = {c["check"]: c for c in json.loads(sick.stdout)["checks"]}["database"]
    assert database["ok"] is False and "gapless_seqs" in database["detail"]

    split = urlsplit(url)
    gone = urlunsplit(split._replace(netloc=f"{split.username}:{PASSWORD}@127.0.0.1:{unused_port()}"))
    unreachable = bridge("doctor", "--db", gone, "--port", port, "--json")
    assert unreachable.exit_code == 1
    database = {c["check"]: c for c in json.loads(unreachable.stdout)["checks"]}["database"]
    assert database["ok"] is False and "cannot be reached" in database["detail"]
