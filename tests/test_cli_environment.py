"""The real `bridge` CLI against a wrong environment: one line on stderr, the documented exit code, nothing created.

Only `bridge serve`, `bridge db migrate` and `bridge db restore` create a database; every other command refuses a
missing file naming the path and how it was chosen (--db, BRIDGE_DB or the default ./bridge.db). A port in use, a
directory the database cannot be created in, a database locked by another program and a missing tmux are refused
the same way, before anything is created.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests

from bridge.testing.processes import run_bridge, settings_env

UNAVAILABLE = 4


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal's single stderr line (no traceback), after checking nothing went to stdout."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "", result.stdout
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def migrated(path: Path) -> Path:
    assert run_bridge("db", "migrate", "--db", str(path)).returncode == 0
    return path


REFUSING = {
    "threads": ["threads"],
    "token issue": ["token", "issue", "--agent-id", "rev", "--role", "participant"],
    "token jwks": ["token", "jwks"],
    "token revoke": ["token", "revoke", "--agent-id", "rev", "--reason", "lost laptop"],
    "freeze": ["freeze", "--reason", "maintenance"],
    "inspect-thread": ["inspect-thread", "--thread-id", "t-1"],
    "worker": ["worker"],
    "db check": ["db", "check"],
    "db backup": ["db", "backup", "--out", "copy.db"],
    "db vacuum": ["db", "vacuum"],
}


@pytest.mark.parametrize("name", REFUSING)
def test_commands_other_than_serve_and_migrate_refuse_a_missing_database_and_create_nothing(tmp_path, name):
    missing = tmp_path / "nowhere" / "x.db"
    result = run_bridge(*REFUSING[name], "--db", str(missing), cwd=tmp_path)
    assert result.returncode == UNAVAILABLE, result.stderr
    line = one_error_line(result)
    assert f"no database at {missing} (from --db)" in line and "UNAVAILABLE" in line
    assert listing(tmp_path) == []  # no file, no directory, no .data/, no key


def test_the_refusal_says_when_bridge_db_or_the_default_chose_the_file(tmp_path):
    from_env = run_bridge("token", "issue", "--agent-id", "rev", "--role", "participant", cwd=tmp_path,
                          env=settings_env(db=str(tmp_path / "env.db")))
    assert from_env.returncode == UNAVAILABLE
    assert f"no database at {tmp_path / 'env.db'} (from BRIDGE_DB)" in one_error_line(from_env)
    default = run_bridge("threads", "--json", cwd=tmp_path)
    assert default.returncode == UNAVAILABLE
    error = json.loads(default.stderr)["error"]
    assert error["code"] == "UNAVAILABLE" and error["details"]["reason"] == "database_missing"
    assert error["details"]["database"] == str(tmp_path / "bridge.db")
    assert error["details"]["database_source"] == "the default ./bridge.db"
    assert listing(tmp_path) == []


def test_db_migrate_creates_the_database_and_token_issue_names_the_database_and_key_it_used(tmp_path):
    db = tmp_path / "b.db"
    assert run_bridge("db", "migrate", "--db", str(db)).returncode == 0
    assert db.is_file() and (tmp_path / "b.data" / "signing-key.pem").is_file()
    issued = run_bridge("token", "issue", "--db", str(db), "--agent-id", "rev", "--role", "participant")
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.strip().count(".") == 2
    kid = json.loads(run_bridge("token", "jwks", "--db", str(db)).stdout)["keys"][0]["kid"]
    assert f"signed with key {kid} of the database {db} (from --db)" in issued.stderr


def test_token_issue_with_url_refuses_a_database_whose_key_the_server_does_not_hold(tmp_path, harness):
    served, other = tmp_path / "served.db", migrated(tmp_path / "other.db")
    args = ("token", "issue", "--agent-id", "rev", "--role", "participant", "--url")
    server = harness.serve("serve", db=served)
    published = requests.get(f"{server.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    served_kid = json.loads(run_bridge("token", "jwks", "--db", str(served)).stdout)["keys"][0]["kid"]
    assert [key["kid"] for key in published] == [served_kid]
    good = run_bridge(*args, server.url, "--db", str(served))
    assert good.returncode == 0, good.stderr
    wrong = run_bridge(*args, server.url, "--db", str(other))
    # BRIDGE_URL checks the same
    from_env = run_bridge(*args[:-1], "--db", str(other), env=settings_env(url=server.url))
    assert from_env.returncode == 1 and "does not hold the signing key" in one_error_line(from_env)
    assert wrong.returncode == 1, wrong.stderr
    line = one_error_line(wrong)  # no token printed
    assert "does not hold the signing key" in line and f"of the database {other} (from --db)" in line
    assert served_kid in line


def test_token_issue_with_url_refuses_when_the_server_cannot_be_asked(tmp_path):
    db = migrated(tmp_path / "b.db")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run_bridge("token", "issue", "--agent-id", "rev", "--role", "participant", "--db", str(db),
                        "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == UNAVAILABLE
    assert f"cannot read the signing keys of the bridge at http://127.0.0.1:{port}" in one_error_line(result)


def test_serve_refuses_a_port_in_use_before_creating_the_database(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bridge("serve", "--port", str(port), "--db", str(tmp_path / "s.db"), cwd=tmp_path)
    assert result.returncode == UNAVAILABLE
    assert f"port {port} on 127.0.0.1 is in use" in one_error_line(result)
    assert listing(tmp_path) == []


def test_serve_refuses_a_database_path_it_cannot_create(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    target = tmp_path / "a-file" / "s.db"
    result = run_bridge("serve", "--port", "0", "--db", str(target), cwd=tmp_path)
    assert result.returncode == UNAVAILABLE
    line = one_error_line(result)
    assert f"cannot create the database {target} (from --db)" in line and "is not a directory" in line
    assert listing(tmp_path) == ["a-file"]


def test_a_database_locked_by_another_program_is_one_line_and_exit_4(tmp_path):
    db = migrated(tmp_path / "b.db")
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("CREATE TABLE held(x)")
        result = run_bridge("threads", "--db", str(db), env=settings_env(busy_timeout="200ms"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == UNAVAILABLE
    assert f"the database {db} (from --db) is locked by another program" in one_error_line(result)


def test_commands_that_start_panes_refuse_a_missing_tmux_before_opening_anything(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_bridge("runtime", "launch", "--agent-id", "a", "--kind", "generic", "--db", str(tmp_path / "x.db"),
                        "--", "sleep", "5", cwd=tmp_path, env={"PATH": str(empty)})
    assert result.returncode == UNAVAILABLE, result.stderr
    assert "tmux is not installed" in one_error_line(result)
    assert listing(tmp_path) == ["bin"]
