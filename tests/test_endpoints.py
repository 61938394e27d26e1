"""Operational endpoints: /health, /ready, /metrics, /v1/openapi.json, and request ids."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge.domain.authz import Principal
from bridge.domain.models import PostMessageInput
from bridge.services.commands import COMMANDS
from bridge.services.control import set_freeze
from bridge.services.core import Call
from bridge.store.migrate import latest_version, record_version
from bridge.testing.database import reading

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


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
    with reading(live_server.parts) as conn:
        record_version(conn, 0)
        try:
            reply = live_server.client.raw("GET", "/ready")
            assert reply.status == 503
            assert "migrations" in reply.body["error"]["details"]["failing"]
        finally:
            record_version(conn, latest_version())
    assert live_server.client.raw("GET", "/ready").status == 200


def scrape(api) -> Samples:
    """Every sample of /metrics: (name, labels) -> value."""
    reply = api.raw("GET", "/metrics")
    assert reply.status == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(reply.body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; a labelled series not yet created counts as 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def deltas(before: Samples, after: Samples, expected: dict[tuple[str, tuple[tuple[str, str], ...]], float]
           ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """For each expected (name, labels): after - before."""
    return {key: value(after, key[0], **dict(key[1])) - value(before, key[0], **dict(key[1])) for key in expected}


def wait_for_long_poll(live_server) -> None:
    """Until a long-poll waits for a commit in the server's store, so the next post is seen by it."""
    store = live_server.parts.bridge.store
    deadline = time.monotonic() + 20
    while store._waiters < 1:  # the store's count of waiting reads (wait_until)
        assert time.monotonic() < deadline, "the long-poll never started waiting"
        time.sleep(0.01)


def test_metric_samples_move_by_exactly_what_was_done(live_server, api, make_token):
    """SPEC §11: each contract series moves by exactly the known actions between two scrapes (a labelled counter
    prints its name before any sample, so names alone prove nothing)."""
    coord, member = make_token("coord", "coordinator"), make_token("a")
    thread_id = api.ok("create_thread", coord, title="t", type="conversation", participants=["a"])["thread_id"]
    looping = api.ok("create_thread", coord, title="loop", type="workflow", participants=["a"])["thread_id"]
    before = scrape(api)

    waited: list[Any] = []
    reader = threading.Thread(target=lambda: waited.append(api.call(
        "read_messages", member, thread_id=thread_id, wait_ms=20000)))
    reader.start()
    wait_for_long_poll(live_server)
    api.ok("post_message", coord, thread_id=thread_id, schema_version=1, kind="chat", body="x")
    reader.join(timeout=30)
    assert [m["body"] for m in waited[0].body["messages"]] == ["x"]  # delivered to the waiting reader
    api.call("get_thread", None, thread_id="nope")  # no credentials
    api.ok("update_thread_status", coord, thread_id=thread_id, status="blocked", reason="needs eyes")
    for _ in range(3):  # the same finding three times: the loop guard blocks the thread
        api.ok("post_message", member, thread_id=looping, schema_version=1, kind="event", body="same bug",
               metadata={"event_type": "finding_reported", "finding_id": "F1"})
    api.ok("trigger_participant", coord, thread_id=looping, target_agent_id="a", reason="look again")
    after = scrape(api)

    expected = {
        ("bridge_requests_total", (("command", "post_message"), ("code", "OK"))): 4,
        ("bridge_requests_total", (("command", "read_messages"), ("code", "OK"))): 1,
        ("bridge_requests_total", (("command", "get_thread"), ("code", "UNAUTHORIZED"))): 1,
        ("bridge_requests_total", (("command", "update_thread_status"), ("code", "OK"))): 1,
        ("bridge_request_duration_seconds_count", (("command", "post_message"),)): 4,
        ("bridge_messages_posted_total", ()): 4,
        ("bridge_post_to_visible_seconds_count", ()): 1,
        ("bridge_auth_failures_total", (("reason", "missing_credentials"),)): 1,
        ("bridge_escalations_total", (("reason", "manual"),)): 1,
        ("bridge_escalations_total", (("reason", "loop_guard"),)): 1,
        ("bridge_loop_guard_trips_total", (("kind", "repeated_finding"),)): 1,
        ("bridge_loop_guard_trips_total", (("kind", "no_progress"),)): 0,
        ("bridge_threads", (("status", "active"),)): -2,
        ("bridge_threads", (("status", "blocked"),)): 2,
        ("bridge_trigger_jobs", (("status", "spawn"),)): 1,
    }
    assert deltas(before, after, expected) == expected
    assert after[("bridge_frozen", frozenset({("mode", "none")}))] == 0
    assert after[("bridge_worker_last_tick_timestamp_seconds", frozenset())] == 0  # no worker in this server

    operator = Call(Principal(agent_id="human:ops", workspace_id="default", role="operator", session_id="cli"))
    set_freeze(live_server.parts.bridge, operator, "create", "incident")
    frozen = scrape(api)
    assert value(frozen, "bridge_frozen", mode="create") == 1
    assert ("bridge_frozen", frozenset({("mode", "none")})) not in frozen


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
