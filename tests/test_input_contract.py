"""The input contract (SPEC §2, §4) over real HTTP and MCP: every integer input is bounded within SQLite's range and
refused beyond it with a typed 400 (never a 500, nothing written); an integral float is an integer, as JSON Schema
says; the OpenAPI document and the MCP tool schemas state what the models enforce; one identity-hint rule holds for
every command; and schemathesis, driven by the served document, finds no 5xx and no response off the document."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from envelope import assert_envelope
from helpers import ThreadTarget, row_counts
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from bridge.http import mcp_endpoint
from bridge.services.commands import COMMANDS

SQLITE_MIN, SQLITE_MAX = -(2**63), 2**63 - 1
DATA_TABLES = ("threads", "participants", "messages", "read_cursors", "sessions", "escalations", "trigger_jobs",
               "trigger_attempts")
COORD, MEMBER = "coord", "member"
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


class World(ThreadTarget):
    """A coordinator's token and a thread (with MEMBER) to aim calls at."""

    def counts(self) -> dict[str, int]:
        return row_counts(self.parts, DATA_TABLES)

    def payload(self, command: str) -> dict[str, Any]:
        """A valid payload of `command` for the coordinator (repeatable: no call changes what the next one needs)."""
        thread = {"thread_id": self.thread_id}
        return {
            "create_thread": {"title": "Another", "type": "workflow", "participants": [MEMBER]},
            "get_thread": thread,
            "list_threads": {},
            "update_participants": {**thread, "add": [MEMBER]},
            "update_thread_status": {**thread, "status": "active", "reason": "no-op"},
            "summarize_thread": thread,
            "post_message": {**thread, "schema_version": 1, "kind": "chat", "body": "hello"},
            "read_messages": thread,
            "ack_read": {**thread, "last_read_seq": 0},
            "inbox": {},
            "heartbeat_session": {"session_id": f"{COORD}-s1", "runtime": "claude_code", "status": "idle",
                                  "resumable": False},
            "trigger_participant": {**thread, "target_agent_id": MEMBER, "reason": "your turn"},
        }[command]

    def call(self, command: str, payload: Any) -> Any:
        return self.api.call(command, self.token, payload)

    def tool(self, command: str, arguments: Any) -> dict[str, Any]:
        """tools/call over POST /mcp; the JSON-RPC reply."""
        return self.rpc({"name": command, "arguments": arguments})

    def rpc(self, params: Any, method: str = "tools/call") -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
        reply = self.api.raw("POST", "/mcp", json=message,
                             headers={**MCP_HEADERS, "Authorization": f"Bearer {self.token}"})
        assert reply.status == 200, reply.body
        return reply.body


@pytest.fixture
def world(api, live_server, make_token) -> Iterator[World]:
    token = make_token(COORD, "coordinator")
    thread = api.ok("create_thread", token, title="Target", type="workflow", participants=[MEMBER])
    yield World(api, live_server.parts, token, thread["thread_id"])


def tool_error(reply: dict[str, Any]) -> str:
    """The text of a tool error result (the bridge's `CODE: message` and each field)."""
    result = reply["result"]
    assert result["isError"] is True, result
    assert "structuredContent" not in result
    return result["content"][0]["text"]


def fields_of(reply: Any) -> dict[str, str]:
    return {f["field"]: f["type"] for f in reply.body["error"]["details"]["fields"]}


# --------------------------------------------------------------------------------------------------- integers
def integer_fields() -> list[tuple[str, str]]:
    """(command, field) of every integer input field, read from the models (a new one is covered by itself)."""
    found = []
    for command in COMMANDS.values():
        for name, prop in command.input.model_json_schema()["properties"].items():
            types = {prop.get("type")} | {p.get("type") for p in prop.get("anyOf", [])}
            if "integer" in types:
                found.append((command.name, name))
    return found


INTEGER_FIELDS = integer_fields()


def test_the_integer_fields_are_the_ones_the_contract_names():
    assert set(INTEGER_FIELDS) == {
        ("list_threads", "limit"), ("summarize_thread", "max_messages"), ("post_message", "schema_version"),
        ("read_messages", "since_seq"), ("read_messages", "limit"), ("read_messages", "wait_ms"),
        ("ack_read", "last_read_seq"), ("inbox", "limit"), ("inbox", "wait_ms")}


@pytest.mark.parametrize(("command", "field"), INTEGER_FIELDS, ids=[f"{c}.{f}" for c, f in INTEGER_FIELDS])
def test_integers_beyond_sqlite_are_a_typed_400_over_http_and_mcp_and_write_nothing(world, command, field):
    before = world.counts()
    for value in (2**63, SQLITE_MIN - 1, 2**64, -(2**64)):
        payload = {**world.payload(command), field: value}
        reply = world.call(command, payload)
        assert_envelope(reply, 400, "INVALID_ARGUMENT")
        assert fields_of(reply)[field] in ("less_than_equal", "greater_than_equal"), reply.body
        text = tool_error(world.tool(command, payload))
        assert text.startswith("INVALID_ARGUMENT:") and f"- {field}:" in text, text
    assert world.counts() == before, "a refused call wrote to the database"


def test_the_largest_seq_is_read_as_an_empty_page(world):
    largest = 2**53 - 1  # the largest seq: exact in every JSON client
    page = world.api.ok("read_messages", world.token, thread_id=world.thread_id, since_seq=largest)
    assert (page["messages"], page["next_seq"]) == ([], largest)
    reply = world.call("read_messages", {"thread_id": world.thread_id, "since_seq": largest + 1})
    assert fields_of(reply) == {"since_seq": "less_than_equal"}


def test_a_forged_list_cursor_beyond_sqlite_is_a_typed_400(world):
    for value in (2**63, SQLITE_MIN - 1, True):
        forged = json.dumps([value, "thr_x"]).encode()
        cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")
        reply = world.call("list_threads", {"cursor": cursor})
        assert_envelope(reply, 400, "INVALID_ARGUMENT")
        assert reply.body["error"]["details"] == {"field": "cursor"}


def test_an_integral_float_is_an_integer(world):
    for body in ("one", "two", "three"):
        world.api.ok("post_message", world.token, thread_id=world.thread_id, schema_version=1.0, kind="chat",
                     body=body)
    page = world.api.ok("read_messages", world.token, thread_id=world.thread_id, limit=2.0, since_seq=0.0)
    assert ([m["body"] for m in page["messages"]], page["has_more"]) == (["one", "two"], True)
    assert all(type(m["schema_version"]) is int for m in page["messages"])  # stored as an int
    assert world.api.ok("read_messages", world.token, thread_id=world.thread_id, limit=101.0)["has_more"] is False
    assert world.api.ok("inbox", world.token, limit=1e2, wait_ms=0.0) == {"threads": []}
    via_mcp = world.tool("read_messages", {"thread_id": world.thread_id, "limit": 1.0})["result"]
    assert [m["body"] for m in via_mcp["structuredContent"]["messages"]] == ["one"]


def test_a_retry_with_the_integral_float_of_the_same_version_is_a_replay(world):
    first = world.api.ok("post_message", world.token, thread_id=world.thread_id, schema_version=1, kind="chat",
                         body="once", idempotency_key="k1")
    again = world.api.ok("post_message", world.token, thread_id=world.thread_id, schema_version=1.0, kind="chat",
                         body="once", idempotency_key="k1")
    assert (again["message_id"], again["replayed"]) == (first["message_id"], True)


@pytest.mark.parametrize(("value", "problem"), [
    (101.5, "int_type"), (True, "int_type"), (False, "int_type"), ("101", "int_type"), (None, "int_type"),
    ([101], "int_type"), ({"n": 101}, "int_type"), (1e300, "less_than_equal"), (-1.0, "greater_than_equal"),
    (201.0, "less_than_equal"),
])
def test_anything_else_is_not_an_integer(world, value, problem):
    reply = world.call("read_messages", {"thread_id": world.thread_id, "limit": value})
    assert_envelope(reply, 400, "INVALID_ARGUMENT")
    assert fields_of(reply) == {"limit": problem}


# --------------------------------------------------------------------------------------------------- duplicates
@pytest.mark.parametrize("participants", [
    ["a", "a"],
    ["a", {"agent_id": "a"}],
    [{"agent_id": "a", "thread_role": "reviewer"}, {"agent_id": "a", "thread_role": "executor"}],
])
def test_duplicate_participants_are_refused_and_documented(world, participants):
    before = world.counts()
    reply = world.call("create_thread", {"title": "Dup", "type": "workflow", "participants": participants})
    assert fields_of(reply) == {"participants": "value_error"}
    reply = world.call("update_participants", {"thread_id": world.thread_id, "add": participants})
    assert fields_of(reply) == {"add": "value_error"}
    assert world.counts() == before
    doc = world.api.raw("GET", "/v1/openapi.json").body["components"]["schemas"]
    tools = {t["name"]: t for t in world.rpc({}, "tools/list")["result"]["tools"]}
    for model, command, field in (("CreateThreadInput", "create_thread", "participants"),
                                  ("UpdateParticipantsInput", "update_participants", "add")):
        for schema in (doc[model], tools[command]["inputSchema"]):
            assert schema["properties"][field]["uniqueItems"] is True
            assert "at most once" in schema["properties"][field]["description"]


# --------------------------------------------------------------------------------------------------- the document
def resolve(doc: dict[str, Any], node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (property name, schema) reachable from `node`, following $refs (each component once)."""
    seen: set[str] = set()

    def walk(item: Any, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                if ref not in seen:
                    seen.add(ref)
                    yield from walk(doc["components"]["schemas"][ref.rsplit("/", 1)[1]], name)
                return
            yield name, item
            for key, value in item.items():
                if key == "properties":
                    for prop, schema in value.items():
                        yield from walk(schema, prop)
                else:
                    yield from walk(value, name)
        elif isinstance(item, list):
            for value in item:
                yield from walk(value, name)

    yield from walk(node, "(body)")


def test_every_integer_in_a_request_body_is_bounded_within_sqlite(world):
    doc = world.api.raw("GET", "/v1/openapi.json").body
    checked = []
    for path, item in doc["paths"].items():
        body = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        for name, schema in resolve(doc, body):
            if schema.get("type") == "integer":
                assert "minimum" in schema and "maximum" in schema, (path, name, schema)
                assert SQLITE_MIN <= schema["minimum"] <= schema["maximum"] <= SQLITE_MAX, (path, name, schema)
                checked.append((path.rsplit("/", 1)[1], name))
    assert set(checked) == set(INTEGER_FIELDS)


def test_a_body_is_required_exactly_when_a_field_is(world):
    doc = world.api.raw("GET", "/v1/openapi.json").body
    optional = set()
    for path, item in doc["paths"].items():
        command = path.rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][COMMANDS[command].input.__name__]
        assert item["post"]["requestBody"]["required"] is bool(schema.get("required")), command
        if not schema.get("required"):
            optional.add(command)
            reply = world.api.raw("POST", path, headers={"Authorization": f"Bearer {world.token}"})
            assert reply.status == 200, (command, reply.body)
    assert optional == {"inbox", "list_threads"}
    reply = world.api.raw("POST", "/v1/mcp/get_thread", headers={"Authorization": f"Bearer {world.token}"})
    assert fields_of(reply) == {"thread_id": "missing"}


def test_operations_say_the_identity_rules(world):
    doc = world.api.raw("GET", "/v1/openapi.json").body
    heartbeat = doc["paths"]["/v1/mcp/heartbeat_session"]["post"]["description"]
    assert "session_id must be your token's session" in heartbeat
    assert "(workspace_id, agent_id, session_id)" in heartbeat
    assert "session_id" in doc["components"]["schemas"]["HeartbeatSessionInput"]["required"]
    for path, item in doc["paths"].items():
        command = COMMANDS[path.rsplit("/", 1)[1]]
        description = item["post"]["description"]
        assert description.startswith(command.description)
        for field, _ in command.input.claim_fields():
            assert field in description, (command.name, field)
        assert "403 WORKSPACE_MISMATCH" in description and "claim_mismatch" in description


def test_the_mcp_tool_schemas_are_the_documents_schemas(world):
    doc = world.api.raw("GET", "/v1/openapi.json").body
    tools = {t["name"]: t for t in world.rpc({}, "tools/list")["result"]["tools"]}
    assert set(tools) == set(COMMANDS)
    for command in COMMANDS.values():
        served = json.loads(json.dumps(tools[command.name]["inputSchema"]).replace("#/$defs/",
                                                                                   "#/components/schemas/"))
        served.pop("$defs", None)
        assert served == doc["components"]["schemas"][command.input.__name__], command.name


def test_the_document_says_what_events_and_text_need(world):
    schema = world.api.raw("GET", "/v1/openapi.json").body["components"]["schemas"]["PostMessageInput"]
    assert "needs metadata.event_type" in schema["properties"]["kind"]["description"]
    assert "Required for kind=event: event_type" in schema["properties"]["metadata"]["description"]
    reply = world.call("post_message", {**world.payload("post_message"), "kind": "event"})
    assert_envelope(reply, 400, "INVALID_ARGUMENT")
    assert schema["properties"]["body"]["pattern"] == "^[^\\u0000]*$"
    reply = world.call("post_message", {**world.payload("post_message"), "body": "a\x00b"})
    assert fields_of(reply) == {"body": "value_error"}


# --------------------------------------------------------------------------------------------------- MCP shapes
JSON_VALUES = [None, True, False, 0, 42, 1.5, -1, "", [], ["read_messages"], {}, {"name": "read_messages"}]


NOT_STRINGS = [v for v in JSON_VALUES if not isinstance(v, str)]


@pytest.mark.parametrize("name", NOT_STRINGS, ids=[json.dumps(v) for v in NOT_STRINGS])
def test_a_tool_name_that_is_not_a_string_is_invalid_params(world, name):
    reply = world.rpc({"name": name, "arguments": {}})
    assert (reply["id"], reply["error"]["code"]) == (7, -32602), reply
    assert "name" in reply["error"]["message"]


@pytest.mark.parametrize("arguments", [v for v in JSON_VALUES if not isinstance(v, dict) and v is not None],
                         ids=lambda v: json.dumps(v))
def test_tool_arguments_that_are_not_an_object_are_invalid_params(world, arguments):
    reply = world.rpc({"name": "inbox", "arguments": arguments})
    assert reply["error"]["code"] == -32602, reply
    assert "arguments" in reply["error"]["message"]


@pytest.mark.parametrize("params", [v for v in JSON_VALUES if not isinstance(v, dict) and v is not None],
                         ids=lambda v: json.dumps(v))
def test_tool_call_params_that_are_not_an_object_are_invalid_params(world, params):
    reply = world.rpc(params)
    assert reply["error"]["code"] == -32602, reply


@pytest.mark.parametrize("params", [{"name": v, "arguments": {}} for v in NOT_STRINGS] +
                         [{"name": "inbox", "arguments": v} for v in JSON_VALUES if not isinstance(v, dict | None)],
                         ids=lambda p: json.dumps(p))
def test_the_bridge_checks_tool_call_shapes_itself(monkeypatch, params):
    """Whatever the SDK's request validation lets through (here: nothing is checked), a tools/call whose name is
    not a string or whose arguments are not an object is INVALID_PARAMS before any lookup, never a 500."""
    monkeypatch.setattr(mcp_endpoint.sdk_methods, "validate_client_request", lambda *_: None)

    def run_tool(*_: Any) -> dict[str, Any]:
        raise AssertionError("a malformed call reached a command")

    raw = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}).encode()
    reply = mcp_endpoint.handle(raw, {"mcp-protocol-version": "2025-11-25"}, run_tool, "req_shape")
    assert (reply.status, reply.body["id"], reply.body["error"]["code"]) == (200, 3, -32602), reply


def test_an_unknown_tool_name_is_invalid_params(world):
    for name in ("", "no_such_tool", "READ_MESSAGES"):
        reply = world.rpc({"name": name, "arguments": {}})
        assert reply["error"]["code"] == -32602 and reply["error"]["data"] == {"tool": name}, reply


# --------------------------------------------------------------------------------------------------- identity hints
EXPECTED_HINTS: dict[str, dict[str, str]] = {  # SPEC §4: every command takes workspace_id and agent_id
    name: {"workspace_id": "workspace_id", "agent_id": "agent_id"} for name in COMMANDS}
EXPECTED_HINTS["create_thread"]["created_by"] = "agent_id"
EXPECTED_HINTS["post_message"] |= {"sender_agent_id": "agent_id", "sender_session_id": "session_id"}
EXPECTED_HINTS["heartbeat_session"]["session_id"] = "session_id"  # required, and still the token's
CLAIMS = {"workspace_id": "default", "agent_id": COORD, "session_id": f"{COORD}-s1"}
HINT_CASES = [(command, field) for command, hints in EXPECTED_HINTS.items() for field in hints]


def test_the_hint_fields_are_the_contracts():
    assert {c.name: dict(c.input.claim_fields()) for c in COMMANDS.values()} == EXPECTED_HINTS


@pytest.mark.parametrize(("command", "field"), HINT_CASES, ids=[f"{c}.{f}" for c, f in HINT_CASES])
def test_a_hint_equal_to_the_claim_is_accepted_and_a_different_one_refused(world, command, field):
    claim = EXPECTED_HINTS[command][field]
    payload = world.payload(command)
    reply = world.call(command, {**payload, field: CLAIMS[claim]})
    assert reply.status == 200, reply.body
    before = world.counts()
    for spoof in ("mallory", CLAIMS[claim].upper(), f"{CLAIMS[claim]}x"):
        reply = world.call(command, {**payload, field: spoof})
        if claim == "workspace_id":
            assert_envelope(reply, 403, "WORKSPACE_MISMATCH")
        else:
            error = assert_envelope(reply, 403, "FORBIDDEN")
            assert error["details"] == {"reason": "claim_mismatch", "field": field}
    assert world.counts() == before, "a refused hint wrote to the database"


def test_update_thread_status_takes_the_agent_id_hint_over_http_and_mcp(world):
    payload = {"thread_id": world.thread_id, "status": "blocked", "reason": "needs a human"}
    changed = world.api.ok("update_thread_status", world.token, **payload, agent_id=COORD)
    assert (changed["status"], changed["changed"]) == ("blocked", True)
    reply = world.call("update_thread_status", {**payload, "status": "closed", "agent_id": MEMBER})
    assert assert_envelope(reply, 403, "FORBIDDEN")["details"]["reason"] == "claim_mismatch"
    assert world.api.ok("get_thread", world.token, thread_id=world.thread_id)["status"] == "blocked"
    via_mcp = world.tool("update_thread_status", {**payload, "status": "active", "reason": "coordinator_override: ok",
                                                  "agent_id": COORD})["result"]
    assert via_mcp["structuredContent"]["status"] == "active"
    text = tool_error(world.tool("update_thread_status", {**payload, "agent_id": MEMBER}))
    assert text.startswith("FORBIDDEN:") and "claim_mismatch" in text


# --------------------------------------------------------------------------------------------------- schemathesis
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, negative_data_rejection]
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 25, schemathesis.GenerationMode.NEGATIVE: 15}  # per operation


def test_schemathesis_finds_no_server_error_and_no_response_off_the_document(world, live_server):
    """Bodies generated from the served document, valid and invalid, for every operation (half of the valid ones
    that name a thread aimed at a real one): no 5xx, every response as documented, every invalid body refused.
    (schemathesis' pytest loader `from_fixture` does not run under pytest 9, so this drives its strategies.)"""
    schema = schemathesis.openapi.from_url(f"{live_server.url}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {f"POST /v1/mcp/{name}" for name in COMMANDS}
    with requests.Session() as session:
        target = Target(live_server.url, session, world)
        for operation in operations:
            for case in boundary_cases(operation, world):
                case.call_and_validate(base_url=target.url, session=session, headers=target.auth(), checks=CHECKS,
                                       timeout=30)
            for mode, examples in EXAMPLES.items():
                exercise(operation, mode, examples, target)


def boundary_cases(operation: Any, world: World) -> Iterator[Any]:
    """Explicit cases: each integer property of the operation's body at the bounds the document gives (SQLite's
    where it gives none), one past them and as an integral float, in an otherwise valid body."""
    command = operation.label.rsplit("/", 1)[1]
    properties = operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
    properties = operation.schema.raw_schema["components"]["schemas"][properties["$ref"].rsplit("/", 1)[1]]
    for name, prop in properties["properties"].items():
        if prop.get("type") == "integer":
            low, high = prop.get("minimum", SQLITE_MIN), prop.get("maximum", SQLITE_MAX)
            values = (low, high, low - 1, high + 1, float(low)) if name != "wait_ms" else (low, low - 1, high + 1)
            for value in values:  # (wait_ms at its maximum would wait for 30 s)
                yield operation.Case(body={**world.payload(command), name: value}, media_type="application/json")


@dataclass
class Target:
    url: str
    session: requests.Session
    world: World

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.token}"}


def exercise(operation: Any, mode: schemathesis.GenerationMode, examples: int, target: Target) -> None:
    """Send `examples` generated cases of one operation (the same ones every run) and validate each response."""
    turn = itertools.count()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode.is_positive and isinstance(case.body, dict):
            if case.body.get("wait_ms"):
                case.body["wait_ms"] = 1  # waiting proves nothing here and costs seconds
            if "thread_id" in case.body and next(turn) % 2 == 0:
                case.body["thread_id"] = target.world.thread_id
        case.call_and_validate(base_url=target.url, session=target.session, headers=target.auth(), checks=CHECKS,
                               timeout=30)

    run()
