"""Limits that must hold across several serving processes on one database: the write quota lives in the database,
the refusal-audit budget is split between the processes, and the worker's lease has one holder at a time.

Two `Parts` on one database file stand for two processes here (separate connections, separate in-memory state);
tests/test_serve_processes.py runs the real `bridge serve --processes`."""

from __future__ import annotations

import pytest
from conftest import call_as
from helpers import create_thread, post_as

from bridge.domain.ratelimit import Bucket, RefusalAuditLimiter, take_token
from bridge.errors import RateLimited
from bridge.store import shared as shared_store


def test_take_token_refills_at_the_rate_up_to_the_burst():
    bucket, wait = take_token(None, 0, 0.5, 2)  # a new bucket is full
    assert (bucket, wait) == (Bucket(1.0, 0), 0.0)
    bucket, wait = take_token(bucket, 0, 0.5, 2)
    assert (bucket, wait) == (Bucket(0.0, 0), 0.0)
    refused, wait = take_token(bucket, 1, 0.5, 2)  # half a token after one unit: one more unit to wait
    assert refused == Bucket(0.5, 1) and wait == pytest.approx(1.0)
    bucket, wait = take_token(refused, 100, 0.5, 2)  # refilled, capped at the burst, one taken
    assert (bucket, wait) == (Bucket(1.0, 100), 0.0)
    assert take_token(Bucket(0.0, 5), 5, 0, 3) == (Bucket(3.0, 5), 0.0)  # rate 0: unlimited


def test_refusal_audit_budget_is_split_between_processes():
    shares = [RefusalAuditLimiter.share(60, 20, 2) for _ in range(2)]
    admitted = sum(share.admit("agent:a").audit for share in shares for _ in range(30))
    assert admitted == 20  # both processes together: the burst, not twice it
    alone = RefusalAuditLimiter.share(60, 20, 1)
    assert sum(alone.admit("agent:a").audit for _ in range(30)) == 20
    assert RefusalAuditLimiter.share(60, 1, 4).admit("agent:a").audit  # every process audits at least one


def test_write_quota_holds_across_two_bridges_on_one_database(make_parts):
    first = make_parts(write_quota_per_min=1, write_burst=3)
    second = make_parts(db=first.bridge.settings.db, write_quota_per_min=1, write_burst=3)
    coordinator, writer = call_as("coord", "coordinator"), call_as("rev")
    thread_id = create_thread(first, coordinator, ("rev", "exec"))
    outcomes = []
    for i in range(6):
        parts = (first, second)[i % 2]
        try:
            outcomes.append(post_as(parts, writer, thread_id, f"post {i}")["seq"])
        except RateLimited as refused:
            outcomes.append(refused.code)
    assert outcomes == [1, 2, 3, "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]
    assert post_as(second, call_as("exec"), thread_id, "another agent has its own quota")["seq"] == 4
    stored = first.bridge.store.query(lambda conn: shared_store.quota_bucket(conn, "rev"))
    assert stored is not None and stored.tokens < 1


def test_a_lease_has_one_holder_and_a_new_fencing_number_per_holder(parts):
    store = parts.bridge.store

    def holder(now: int) -> str | None:
        found = store.query(lambda conn: conn.execute(
            "SELECT holder FROM leases WHERE name = 'worker:default' AND expires_at > ?", (now,)).fetchall())
        return found[0][0] if found else None

    def take(holder: str, now: int) -> int | None:
        return store.write(lambda conn: shared_store.take_lease(conn, "worker:default", holder, now, 1000))

    assert take("a", 0) == 1
    assert take("b", 500) is None  # a's lease runs until 1000
    assert take("a", 900) == 1  # renewed by its holder: same fencing number
    assert take("b", 1899) is None
    assert take("b", 1900) == 2  # lapsed: b takes it over with a new fencing number
    assert holder(1901) == "b"
    store.write(lambda conn: shared_store.release_lease(conn, "worker:default", "b"))
    assert holder(1902) is None
    assert take("a", 1903) == 3
