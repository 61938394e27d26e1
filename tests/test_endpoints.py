"""Operational endpoints: /health, /ready, /metrics, /v1/openapi.json, and request ids."""

from __future__ import annotations

import shutil

from bridge.domain.models import PostMessageInput
from bridge.services.commands import COMMANDS
from bridge.store import connect


def test_health_reports_version_worker_and_freeze(api):
    reply = api.raw("GET", "/health")
    assert reply.status == 200
    assert reply.body["status"] == "ok"
    assert reply.body["version"]
    assert "last_tick_age_seconds" in reply.body["worker"]
    assert reply.body["frozen"] is None
    assert reply.headers["x-request-id"]


def test_ready_names_the_failing_check(live_server):
    api = live_server.client
    assert api.raw("GET", "/ready").status == 200
    data_dir = live_server.parts.bridge.settings.data_dir
    backup = data_dir.with_name("moved")
    shutil.move(data_dir, backup)
    data_dir.write_text("not a directory")
    try:
        reply = api.raw("GET", "/ready")
        assert reply.status == 503
        assert reply.code == "UNAVAILABLE"
        assert reply.body["error"]["details"]["failing"] == ["data_dir"]
    finally:
        data_dir.unlink()
        shutil.move(backup, data_dir)
    assert api.raw("GET", "/ready").status == 200


def test_ready_fails_when_migrations_are_not_current(live_server):
    conn = connect(live_server.parts.bridge.store.path)
    conn.execute("PRAGMA user_version=0")
    try:
        reply = live_server.client.raw("GET", "/ready")
        assert reply.status == 503
        assert "migrations" in reply.body["error"]["details"]["failing"]
    finally:
        conn.execute("PRAGMA user_version=1")
        conn.close()


def test_metrics_expose_the_contract_names(api, make_token):
    coord = make_token("coord", "coordinator")
    thread = api.ok("create_thread", coord, title="t", type="conversation", participants=["a"])
    api.ok("post_message", coord, thread_id=thread["thread_id"], schema_version=1, kind="chat", body="x")
    api.call("get_thread", None, thread_id="nope")
    text = api.raw("GET", "/metrics").body
    for name in ("bridge_requests_total", "bridge_request_duration_seconds_bucket", "bridge_messages_posted_total",
                 "bridge_post_to_visible_seconds_bucket", "bridge_threads", "bridge_escalations_total",
                 "bridge_loop_guard_trips_total", "bridge_auth_failures_total", "bridge_frozen",
                 "bridge_worker_last_tick_timestamp_seconds"):
        assert name in text, name
    assert 'bridge_requests_total{code="OK",command="post_message"} 1.0' in text
    assert 'bridge_threads{status="active"} 1.0' in text
    assert "bridge_messages_posted_total 1.0" in text
    assert 'bridge_auth_failures_total{reason="missing_credentials"} 1.0' in text
    assert 'bridge_requests_total{code="UNAUTHORIZED",command="get_thread"} 1.0' in text


def test_openapi_lists_every_command_from_the_models(api):
    doc = api.raw("GET", "/v1/openapi.json").body
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {f"/v1/mcp/{name}" for name in COMMANDS}
    schema = doc["components"]["schemas"]["PostMessageInput"]
    assert set(schema["required"]) == {"thread_id", "schema_version", "kind", "body"}
    assert set(schema["properties"]) == set(PostMessageInput.model_fields)
    assert schema.get("additionalProperties") is False


def test_request_id_is_echoed_when_sane_and_generated_otherwise(api):
    assert api.raw("GET", "/health", headers={"x-request-id": "abc-123:x.y_z"}).headers["x-request-id"] == \
        "abc-123:x.y_z"
    generated = api.raw("GET", "/health", headers={"x-request-id": "bad id!"}).headers["x-request-id"]
    assert generated != "bad id!" and generated
    assert api.raw("GET", "/nowhere").headers["x-request-id"]
