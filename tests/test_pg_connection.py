"""The PostgreSQL connection adapter: BEGIN, SAVEPOINT and RELEASE are held back and travel with the next statement
(one round trip less each), and nothing can see the connection before they reached the server."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bridge.store.postgres import PgConnection


class Spy:
    """A real connection that records each round trip (each `execute` of the driver)."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url, autocommit=True)
        self.sent: list[str] = []
        real = self.conn.execute

        def execute(sql: Any, params: Any = None, **kwargs: Any) -> Any:
            self.sent.append(str(sql))
            return real(sql, params, **kwargs)

        self.conn.execute = execute  # type: ignore[method-assign]


@pytest.fixture
def spy(postgres_url: str):
    spy = Spy(postgres_url)
    spy.conn.execute("CREATE TABLE t (x integer)")
    spy.sent.clear()
    yield spy
    spy.conn.close()


def test_begin_and_savepoint_go_with_the_next_statement(spy):
    conn = PgConnection(spy.conn)
    conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
    conn.execute("SAVEPOINT work")
    assert spy.sent == [] and conn.in_transaction
    assert conn.execute("SELECT 41 + 1").fetchall() == [(42,)]  # the last statement's result
    assert spy.sent == ["BEGIN ISOLATION LEVEL SERIALIZABLE; SAVEPOINT work; SELECT 41 + 1"]
    conn.execute("INSERT INTO t VALUES (?), (?)", (1, 2))
    assert conn.changes() == 2
    conn.execute("RELEASE work")
    conn.execute("UPDATE t SET x = x + 1")
    assert conn.changes() == 2  # the update's count, not the RELEASE's
    conn.execute("COMMIT")
    assert spy.sent[-2:] == ["RELEASE work; UPDATE t SET x = x + 1", "COMMIT"]
    assert spy.conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(2,), (3,)]


def test_held_statements_go_first_and_alone_before_a_statement_with_parameters(spy):
    conn = PgConnection(spy.conn)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (?)", (7,))
    conn.execute("ROLLBACK")
    assert spy.sent == ["BEGIN", "INSERT INTO t VALUES (%s)", "ROLLBACK"]
    assert spy.conn.execute("SELECT count(*) FROM t").fetchall() == [(0,)]  # the insert was inside the transaction


def test_a_cursor_of_its_own_sees_the_transaction_begun(spy):
    conn = PgConnection(spy.conn)
    conn.execute("BEGIN")
    with conn.raw.cursor() as cursor:  # as `db copy` streams and inserts
        cursor.execute("INSERT INTO t VALUES (1)")
    conn.execute("ROLLBACK")
    assert spy.conn.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_a_rollback_forgets_what_was_held(spy):
    conn = PgConnection(spy.conn)
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT work")
    conn.discard_held()
    assert not conn.in_transaction
    assert conn.execute("SELECT 1").fetchall() == [(1,)]
    assert spy.sent == ["SELECT 1"]
