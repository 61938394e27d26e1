"""On PostgreSQL the automatic-wake fold takes a message only once every writing transaction that started before it
has ended (its watermark is the snapshot's xmin): what the README promises, read-only sessions included."""

from __future__ import annotations

import psycopg
from conftest import call_as
from helpers import create_thread, post_as

from bridge.settings import Settings
from bridge.store import triggers as trigger_store
from bridge.wiring import build


def _fold_all(store) -> set[str]:
    folded: set[str] = set()
    while store.read(trigger_store.has_unfolded):
        folded |= store.write(lambda conn: trigger_store.fold_addressed(conn, 100))
    return folded


def test_the_fold_waits_for_a_writing_transaction_open_elsewhere_on_the_server(postgres, postgres_url):
    parts = build(Settings.load({"db": postgres_url, "write_quota_per_min": 0}, env={}))
    store = parts.bridge.store
    try:
        thread_id = create_thread(parts, call_as("coord", "coordinator"), ("rev", "exec"))
        _fold_all(store)
        with psycopg.connect(postgres.url(), autocommit=True) as other:  # another database on the same server
            other.execute("BEGIN")
            other.execute("SELECT 1")  # read-only: no transaction id, holds nothing back
            post_as(parts, call_as("rev"), thread_id, "seen at once")
            assert _fold_all(store) == {thread_id}

            other.execute("SELECT pg_current_xact_id()")  # now a writing transaction, still open
            post_as(parts, call_as("rev"), thread_id, "waits for the writer")
            assert not store.read(trigger_store.has_unfolded)
            other.execute("ROLLBACK")
        assert _fold_all(store) == {thread_id}
    finally:
        parts.close()
