"""PostgreSQL becomes unreachable under a running bridge (connections refused, existing ones cut) and comes back:
requests answer 503 UNAVAILABLE in the envelope, `/ready` fails and names the database, nothing half-written
appears, and the bridge recovers by itself once the server accepts connections again."""

from __future__ import annotations

import psycopg
from helpers import new_thread, post

from bridge.settings import Settings
from bridge.testing.database import query
from bridge.testing.processes import wait_until
from bridge.testing.tokens import Minter
from bridge.wiring import build


def _cut_off(postgres, name: str, allow: bool) -> None:
    """Refuse (or allow again) new connections to database `name` and end every session it has."""
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def _post_once(client, token: str, thread_id: str, body: str) -> dict | None:
    """The post's result, or None while the bridge still answers 503 UNAVAILABLE."""
    reply = client.call("post_message", token, thread_id=thread_id, schema_version=1, kind="chat", body=body)
    if reply.status == 503 and reply.code == "UNAVAILABLE":
        return None
    assert reply.status == 200, reply.body
    return reply.body


def test_an_unreachable_database_answers_503_and_the_bridge_recovers(postgres, postgres_url, serve_parts, tmp_path):
    name = postgres_url.rsplit("/", 1)[1]
    parts = build(Settings.load({"db": postgres_url, "busy_timeout": "1s", "write_quota_per_min": 0}, env={}))
    try:
        live = serve_parts(parts)
        minter = Minter(parts.key, parts.bridge.settings)
        coord, rev = minter("coord", "coordinator"), minter("rev")
        thread_id = new_thread(live.client, coord, ["rev"])
        assert post(live.client, rev, thread_id, "before")["seq"] == 1

        _cut_off(postgres, name, allow=False)
        try:
            refused = live.client.call("post_message", rev, thread_id=thread_id, schema_version=1, kind="chat",
                                       body="during")
            assert refused.status == 503 and refused.code == "UNAVAILABLE", refused.body
            assert refused.body["error"]["details"]["reason"] == "database_unavailable"
            ready = live.client.raw("GET", "/ready")
            assert ready.status == 503 and "database" in ready.body["error"]["details"]["failing"], ready.body
        finally:
            _cut_off(postgres, name, allow=True)

        # The pool reconnects with a backoff: clients retry a 503 (it carries Retry-After) until it answers again.
        after = wait_until(lambda: _post_once(live.client, rev, thread_id, "after"), 30)
        assert after is not None and after["seq"] == 2  # it recovered; the refused post left no gap
        assert live.client.raw("GET", "/ready").status == 200
        assert query(postgres_url, "SELECT body FROM messages WHERE thread_id = ? ORDER BY seq",
                     (thread_id,)) == [("before",), ("after",)]
    finally:
        parts.close()
