"""The throwaway PostgreSQL server the tests start themselves: usable databases, isolation, a clean stop, no root."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from bridge.testing.postgres import PostgresServer


def test_a_created_database_keeps_what_is_written(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        conn.execute("INSERT INTO notes VALUES (%s, %s)", (1, "héllo"))
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT id, body FROM notes").fetchall() == [(1, "héllo")]


def test_two_created_databases_are_isolated(postgres):
    first, second = postgres.create_database(), postgres.create_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE only_here (x BIGINT)")
    with psycopg.connect(second) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert tables == []


def test_a_named_database_is_dropped_on_request(postgres):
    url = postgres.create_database("harness_named")
    assert url == postgres.url("harness_named")
    postgres.drop_database("harness_named")
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(url).close()


def test_stop_ends_the_server_and_removes_its_directory():
    server = PostgresServer().start()
    pid, port, directory = server.pid, server.port, server.directory
    assert directory is not None and directory.is_dir()
    psycopg.connect(server.url()).close()

    server.stop()
    server.stop()  # idempotent

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://bridge@127.0.0.1:{port}/postgres", connect_timeout=2).close()
    assert not directory.exists()


def test_the_server_never_runs_as_root(postgres):
    status = Path(f"/proc/{postgres.pid}/status").read_text()
    real, effective = (int(uid) for uid in next(line for line in status.splitlines()
                                                  if line.startswith("Uid:")).split()[1:3])
    if os.geteuid() == 0:
        assert real != 0 and effective != 0
    else:
        assert real == effective == os.geteuid()
    assert Path(f"/proc/{postgres.pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/postgres")
