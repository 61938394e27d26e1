"""`POST /mcp` over raw HTTP: both protocol eras, the transport checks and every malformed message, on a real
server with real tokens. (The official SDK clients are in test_mcp_eras.py.)"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import mcp.types as mt
import pytest

from bridge.http import mcp_endpoint
from bridge.http.app import create_app
from bridge.services.commands import COMMANDS
from bridge.settings import Settings
from bridge.store.rows import rows

MODERN = "2026-07-28"
META = {mt.PROTOCOL_VERSION_META_KEY: MODERN, mt.CLIENT_CAPABILITIES_META_KEY: {},
        mt.CLIENT_INFO_META_KEY: {"name": "raw-test", "version": "1"}}
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


def post(api, token: str | None, body: Any = None, *, headers: dict[str, str] | None = None, data: bytes | None = None):
    """POST /mcp with a JSON body (or raw `data`), the bearer token and the Accept header clients send."""
    sent = {"Accept": "application/json, text/event-stream", **({"Authorization": f"Bearer {token}"} if token else {}),
            **(headers or {})}
    if data is not None:
        return api.raw("POST", "/mcp", data=data, headers={"Content-Type": "application/json", **sent})
    return api.raw("POST", "/mcp", json=body, headers=sent)


def rpc(api, token, method, params=None, rpc_id: Any = 1, *, headers: dict[str, str] | None = None):
    """A handshake-era message (a notification when `rpc_id` is None)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if rpc_id is not None:
        message["id"] = rpc_id
    return post(api, token, message, headers=headers)


def modern(api, token, method, params=None, rpc_id: Any = 1, *, headers: dict[str, str] | None = None,
           meta: dict[str, Any] | None = None):
    """A 2026-07-28 request: `_meta` envelope plus the MCP-Protocol-Version / Mcp-Method / Mcp-Name headers."""
    params = {**(params or {}), "_meta": META if meta is None else meta}
    routing = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if "name" in params:
        routing["Mcp-Name"] = params["name"]
    return rpc(api, token, method, params, rpc_id, headers={**routing, **(headers or {})})


def metrics(api) -> str:
    return api.raw("GET", "/metrics").body


# --------------------------------------------------------------------------------------------------- handshake era
def test_initialize_negotiates_and_lists_every_command_as_a_tool(api, make_token):
    token = make_token("rev")
    init = rpc(api, token, "initialize", INIT)
    assert init.status == 200 and "mcp-session-id" not in {k.lower() for k in init.headers}
    result = init.body["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert result["serverInfo"]["name"] == "agent-bridge"
    for word in ("inbox", "read_messages", "post_message", "ack_read", "finding_reported", "fix_pushed",
                 "finding_verified", "finding_rejected", "re_review_requested", "wait_ms", "loop guard",
                 "retry_after"):
        assert word in result["instructions"], word
    assert "resultType" not in result  # handshake-era results carry only their own revision's fields

    initialized = rpc(api, token, "notifications/initialized", rpc_id=None, headers={"MCP-Protocol-Version":
                                                                                       "2025-06-18"})
    assert (initialized.status, initialized.body) == (202, "")
    assert "content-type" not in {k.lower() for k in initialized.headers}

    listed = rpc(api, token, "tools/list", rpc_id=2, headers={"MCP-Protocol-Version": "2025-06-18"}).body["result"]
    assert set(listed) == {"tools"}
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) == set(COMMANDS)
    for name, tool in tools.items():
        command = COMMANDS[name]
        assert (tool["title"], tool["description"]) == (command.title, command.description)
        assert tool["annotations"] == {"title": command.title, "readOnlyHint": not command.writes,
                                       "idempotentHint": command.idempotent, "destructiveHint": False,
                                       "openWorldHint": False}
        assert tool["outputSchema"]["type"] == "object"
    assert tools["read_messages"]["annotations"]["readOnlyHint"] is True
    assert tools["post_message"]["annotations"]["readOnlyHint"] is False
    assert set(tools["post_message"]["inputSchema"]["required"]) == {"thread_id", "schema_version", "kind", "body"}
    assert rpc(api, token, "ping", rpc_id=3).body == {"jsonrpc": "2.0", "id": 3, "result": {}}


@pytest.mark.parametrize("asked", ["1999-01-01", "2024-11-05", MODERN, "2025-11-25"])
def test_initialize_offers_the_newest_handshake_version_for_one_it_does_not_negotiate(api, make_token, asked):
    """2026-07-28 is reached only without the handshake, so `initialize` never offers it."""
    init = rpc(api, make_token("rev"), "initialize", {**INIT, "protocolVersion": asked})
    assert init.body["result"]["protocolVersion"] == "2025-11-25"


def test_no_session_is_needed_and_a_missing_version_header_is_2025_03_26(api, make_token):
    token = make_token("rev")
    listed = rpc(api, token, "tools/list")  # no initialize, no session id, no MCP-Protocol-Version
    assert listed.status == 200 and len(listed.body["result"]["tools"]) == len(COMMANDS)
    assert ('bridge_mcp_requests_total{code="OK",method="tools/list",tool="",version="2025-03-26"} 1.0'
            in metrics(api))


@pytest.mark.parametrize("version", ["1999-01-01", "2024-11-05", "latest", ""])
def test_an_unsupported_version_header_is_400(api, make_token, version):
    reply = rpc(api, make_token("rev"), "tools/list", rpc_id=7, headers={"MCP-Protocol-Version": version})
    assert reply.status == 400
    assert reply.body["id"] == 7
    assert reply.body["error"]["code"] == mt.UNSUPPORTED_PROTOCOL_VERSION
    assert reply.body["error"]["data"] == {"supported": list(mcp_endpoint.VERSIONS), "requested": version}


def test_tool_calls_use_the_same_services_rules_and_report_failures_as_tool_errors(api, make_token):
    coord, rev, outsider = make_token("coord", "coordinator"), make_token("rev"), make_token("outsider")
    created = rpc(api, coord, "tools/call", {"name": "create_thread", "arguments": {
        "title": "via mcp", "type": "workflow", "participants": ["rev"]}}).body["result"]
    assert created["isError"] is False
    thread_id = created["structuredContent"]["thread_id"]
    assert thread_id in created["content"][0]["text"]
    posted = rpc(api, rev, "tools/call", {"name": "post_message", "arguments": {
        "thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": "hello from mcp"}}).body["result"]
    assert posted["isError"] is False and posted["structuredContent"]["seq"] == 1
    read = api.ok("read_messages", coord, thread_id=thread_id)
    assert [(m["sender_agent_id"], m["body"]) for m in read["messages"]] == [("rev", "hello from mcp")]

    refused = rpc(api, outsider, "tools/call", {"name": "read_messages", "arguments": {"thread_id": thread_id}})
    assert refused.status == 200 and refused.body["result"]["isError"] is True
    assert "structuredContent" not in refused.body["result"]
    assert refused.body["result"]["content"][0]["text"].startswith("FORBIDDEN: ")

    invalid = rpc(api, rev, "tools/call", {"name": "post_message", "arguments": {"thread_id": thread_id, "bogus": 1}})
    result = invalid.body["result"]
    assert result["isError"] is True and "structuredContent" not in result
    text = result["content"][0]["text"]
    assert text.startswith("INVALID_ARGUMENT: ")
    for field in ("bogus", "schema_version", "kind", "body"):
        assert f"- {field}: " in text, text


def test_a_refused_tool_call_is_audited_and_counted_like_v1(live_server, api, make_token):
    """Refusals through MCP write the audit row `/v1` writes, and count by tool name and result code."""
    rev = make_token("rev")
    refused = rpc(api, rev, "tools/call", {"name": "create_thread", "arguments": {
        "title": "nope", "type": "workflow", "participants": ["rev"]}}, headers={"x-request-id": "req-mcp-refused",
                                                                                "MCP-Protocol-Version": "2025-11-25"})
    assert refused.body["result"]["isError"] is True
    via_v1 = api.raw("POST", "/v1/mcp/create_thread", json={"title": "nope", "type": "workflow",
                                                             "participants": ["rev"]},
                     headers={"Authorization": f"Bearer {rev}", "x-request-id": "req-v1-refused"})
    assert via_v1.status == 403

    def audited(request_id: str) -> list[tuple[Any, ...]]:
        found = live_server.parts.bridge.store.read(lambda conn: rows(
            conn, "SELECT * FROM audit_events WHERE request_id = ?", (request_id,)))
        return [(r["actor"], r["actor_role"], r["operation"], r["outcome"], r["reason"]) for r in found]

    assert audited("req-mcp-refused") == audited("req-v1-refused") == [
        ("rev", "participant", "create_thread", "refused", "FORBIDDEN")]
    text = metrics(api)
    assert 'bridge_requests_total{code="FORBIDDEN",command="create_thread"} 2.0' in text
    assert ('bridge_mcp_requests_total{code="FORBIDDEN",method="tools/call",tool="create_thread",'
            'version="2025-11-25"} 1.0') in text


def test_a_refused_read_through_mcp_is_audited_once(live_server, api, make_token):
    """A read refusal is not audited by the service: the app audits it, for MCP as for /v1."""
    coord = make_token("coord", "coordinator")
    thread_id = api.ok("create_thread", coord, title="t", type="workflow", participants=["rev"])["thread_id"]
    reply = rpc(api, make_token("outsider"), "tools/call", {"name": "read_messages", "arguments": {
        "thread_id": thread_id}}, headers={"x-request-id": "req-mcp-read-refused"})
    assert reply.body["result"]["isError"] is True
    found = live_server.parts.bridge.store.read(lambda conn: rows(
        conn, "SELECT * FROM audit_events WHERE request_id = ?", ("req-mcp-read-refused",)))
    assert [(r["actor"], r["operation"], r["outcome"], r["thread_id"]) for r in found] == [
        ("outsider", "read_messages", "refused", thread_id)]


def test_a_rate_limited_write_says_when_to_retry(make_parts, serve_parts, make_token):
    server = serve_parts(make_parts(write_quota_per_min=1, write_burst=1))
    coord = make_token("coord", "coordinator")
    thread_id = server.client.ok("create_thread", coord, title="t", type="workflow", participants=["rev"])[
        "thread_id"]
    message = {"thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": "hi"}
    assert rpc(server.client, coord, "tools/call", {"name": "post_message", "arguments": message}).body[
        "result"]["isError"] is False
    limited = rpc(server.client, coord, "tools/call", {"name": "post_message", "arguments": message}).body["result"]
    assert limited["isError"] is True and "structuredContent" not in limited
    assert limited["content"][0]["text"].startswith("RATE_LIMITED: ") and "retry_after: " in limited["content"][0][
        "text"]


# --------------------------------------------------------------------------------------------------- 2026-07-28
def test_discover_and_results_carry_the_2026_fields(api, make_token):
    token = make_token("rev")
    discovered = modern(api, token, "server/discover")
    assert discovered.status == 200
    result = discovered.body["result"]
    assert result["supportedVersions"] == list(mcp_endpoint.VERSIONS)
    assert (result["resultType"], result["cacheScope"]) == ("complete", "public") and result["ttlMs"] > 0
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert result["_meta"][mt.SERVER_INFO_META_KEY]["name"] == "agent-bridge"
    assert "post_message" in result["instructions"]

    listed = modern(api, token, "tools/list", rpc_id=2).body["result"]
    assert (listed["resultType"], listed["cacheScope"]) == ("complete", "public") and listed["ttlMs"] > 0
    assert {t["name"] for t in listed["tools"]} == set(COMMANDS)
    mt.ListToolsResult.model_validate(listed)

    called = modern(api, token, "tools/call", {"name": "inbox", "arguments": {}}, rpc_id=3).body["result"]
    assert (called["resultType"], called["isError"], called["structuredContent"]) == ("complete", False,
                                                                                       {"threads": []})


@pytest.mark.parametrize(("method", "params"), [
    ("initialize", INIT), ("ping", None), ("resources/list", None), ("no/such/method", None)])
def test_methods_outside_2026_are_404_method_not_found(api, make_token, method, params):
    reply = modern(api, make_token("rev"), method, params, rpc_id="abc")
    assert reply.status == 404
    assert reply.body["id"] == "abc" and reply.body["error"]["code"] == mt.METHOD_NOT_FOUND


def test_the_routing_headers_must_match_the_body(api, make_token):
    token = make_token("rev")

    def code(reply) -> tuple[int, int]:
        return reply.status, reply.body["error"]["code"]

    mismatch = (400, mt.HEADER_MISMATCH)
    assert code(modern(api, token, "tools/list", headers={"Mcp-Method": "tools/call"})) == mismatch
    assert code(modern(api, token, "tools/call", {"name": "inbox", "arguments": {}},
                       headers={"Mcp-Name": "post_message"})) == mismatch
    no_name = rpc(api, token, "tools/call", {"name": "inbox", "arguments": {}, "_meta": META},
                  headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call"})
    assert code(no_name) == mismatch
    no_method = rpc(api, token, "tools/list", {"_meta": META}, headers={"MCP-Protocol-Version": MODERN})
    assert code(no_method) == mismatch
    enveloped_without_header = rpc(api, token, "tools/list", {"_meta": META}, headers={"Mcp-Method": "tools/list"})
    assert code(enveloped_without_header) == mismatch
    assert code(modern(api, token, "tools/list", headers={"MCP-Protocol-Version": "2025-11-25"})) == mismatch


def test_the_2026_envelope_is_required_and_its_version_checked(api, make_token):
    token = make_token("rev")
    bare = rpc(api, token, "tools/list", headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    assert (bare.status, bare.body["error"]["code"]) == (400, mt.INVALID_PARAMS)
    future = {**META, mt.PROTOCOL_VERSION_META_KEY: "2099-01-01"}
    unsupported = rpc(api, token, "tools/list", {"_meta": future},
                      headers={"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"})
    assert (unsupported.status, unsupported.body["error"]["code"]) == (400, mt.UNSUPPORTED_PROTOCOL_VERSION)
    assert unsupported.body["error"]["data"]["supported"] == list(mcp_endpoint.VERSIONS)


def test_2026_protocol_errors_use_the_revision_statuses(api, make_token):
    token = make_token("rev")
    unknown_tool = modern(api, token, "tools/call", {"name": "no_such_tool", "arguments": {}})
    assert (unknown_tool.status, unknown_tool.body["error"]["code"]) == (400, mt.INVALID_PARAMS)
    notification = post(api, token, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                     "params": {"requestId": 1}}, headers={"MCP-Protocol-Version": MODERN})
    assert (notification.status, notification.body) == (202, "")
    garbage = post(api, token, data=b"{nope", headers={"MCP-Protocol-Version": MODERN})
    assert (garbage.status, garbage.body["error"]["code"], garbage.body["id"]) == (400, mt.PARSE_ERROR, None)


# --------------------------------------------------------------------------------------------------- malformed input
@pytest.mark.parametrize(("message", "code", "echoed_id"), [
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 42, "arguments": {}}},
     mt.INVALID_PARAMS, 1),
    ({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"arguments": {}}}, mt.INVALID_PARAMS, 2),
    ({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "no_such_tool"}}, mt.INVALID_PARAMS, 3),
    ({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "inbox", "arguments": [1]}},
     mt.INVALID_PARAMS, 4),
    ({"jsonrpc": "2.0", "id": 5, "method": "tools/call"}, mt.INVALID_PARAMS, 5),
    ({"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": [1, 2]}, mt.INVALID_PARAMS, 6),
    ({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": "x"}, mt.INVALID_PARAMS, 7),
    ({"jsonrpc": "2.0", "id": 8, "method": "resources/list"}, mt.METHOD_NOT_FOUND, 8),
    ({"jsonrpc": "2.0", "id": 9, "method": "server/discover"}, mt.METHOD_NOT_FOUND, 9),
    ({"jsonrpc": "2.0", "id": 10, "method": "initialize", "params": {"protocolVersion": 5}}, mt.INVALID_PARAMS, 10),
])
def test_bad_requests_are_json_rpc_errors(api, make_token, message, code, echoed_id):
    reply = post(api, make_token("rev"), message)
    assert reply.status == 200, reply.body  # an error answering a readable request (handshake era)
    assert (reply.body["jsonrpc"], reply.body["id"], reply.body["error"]["code"]) == ("2.0", echoed_id, code)
    assert reply.body["error"]["message"]


@pytest.mark.parametrize(("body", "code", "echoed_id"), [
    ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], mt.INVALID_REQUEST, None),
    ([], mt.INVALID_REQUEST, None),
    ("ping", mt.INVALID_REQUEST, None),
    (42, mt.INVALID_REQUEST, None),
    ({"jsonrpc": "1.0", "id": 5, "method": "ping"}, mt.INVALID_REQUEST, 5),
    ({"id": 6, "method": "ping"}, mt.INVALID_REQUEST, 6),
    ({"jsonrpc": "2.0", "id": True, "method": "ping"}, mt.INVALID_REQUEST, None),
    ({"jsonrpc": "2.0", "id": None, "method": "ping"}, mt.INVALID_REQUEST, None),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, mt.INVALID_REQUEST, None),
    ({"jsonrpc": "2.0", "id": 7, "method": 12}, mt.INVALID_REQUEST, 7),
    ({"jsonrpc": "2.0", "id": 8, "method": ["ping"]}, mt.INVALID_REQUEST, 8),
    ({"jsonrpc": "2.0", "method": "notifications/initialized", "params": [1]}, mt.INVALID_REQUEST, None),
    ({"jsonrpc": "2.0", "id": 9}, mt.INVALID_REQUEST, None),
    ({"hello": "world"}, mt.INVALID_REQUEST, None),
])
def test_unreadable_messages_are_400_json_rpc_errors(api, make_token, body, code, echoed_id):
    reply = post(api, make_token("rev"), body)
    assert reply.status == 400, reply.body
    assert (reply.body["id"], reply.body["error"]["code"]) == (echoed_id, code)


@pytest.mark.parametrize("data", [b"{nope", b"", b"[1,", b'{"a": 1, "a": 2}', b'{"jsonrpc": "2.0", "id": NaN}',
                                  b"\xff\xfe"])
def test_malformed_json_is_a_parse_error(api, make_token, data):
    reply = post(api, make_token("rev"), data=data)
    assert reply.status == 400
    assert reply.body == {"jsonrpc": "2.0", "id": None, "error": reply.body["error"]}
    assert reply.body["error"]["code"] == mt.PARSE_ERROR


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "id": 1, "result": {}},
    {"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "no"}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "bye"}},
    {"jsonrpc": "2.0", "method": "notifications/whatever"},
])
def test_responses_and_notifications_from_the_client_are_202(api, make_token, message):
    reply = post(api, make_token("rev"), message, headers={"MCP-Protocol-Version": "2025-11-25"})
    assert (reply.status, reply.body) == (202, "")
    assert "content-type" not in {k.lower() for k in reply.headers}


def test_an_unexpected_failure_is_a_json_rpc_internal_error(api, make_token, monkeypatch):
    def explode(*_: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    original = COMMANDS["inbox"]
    monkeypatch.setitem(COMMANDS, "inbox", dataclasses.replace(original, handler=explode))
    reply = rpc(api, make_token("rev"), "tools/call", {"name": "inbox", "arguments": {}}, rpc_id=11)
    assert reply.status == 500
    assert (reply.body["id"], reply.body["error"]["code"]) == (11, mt.INTERNAL_ERROR)
    assert "boom" not in str(reply.body)


# --------------------------------------------------------------------------------------------------- transport
def test_mcp_needs_a_valid_token_and_only_post_is_offered(api):
    reply = rpc(api, None, "tools/list")
    assert reply.status == 401 and reply.code == "UNAUTHORIZED"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    for method in ("GET", "DELETE"):
        refused = api.raw(method, "/mcp")
        assert refused.status == 405 and "POST" in refused.headers["Allow"]


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "null",
                                    "http://192.168.1.10:8765", "file://", "http://[::1", ""])
def test_a_foreign_origin_is_403(api, make_token, origin):
    reply = rpc(api, make_token("rev"), "tools/list", headers={"Origin": origin})
    assert reply.status == 403
    assert reply.body["id"] is None and reply.body["error"]["code"] == mt.INVALID_REQUEST
    assert 'bridge_requests_total{code="ORIGIN_NOT_ALLOWED",command="mcp"} 1.0' in metrics(api)


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:9000",
                                    "http://LOCALHOST:1/"])
def test_loopback_origins_are_allowed(api, make_token, origin):
    assert rpc(api, make_token("rev"), "ping", headers={"Origin": origin}).status == 200


def test_configured_origins_are_allowed(make_parts, serve_parts, make_token):
    server = serve_parts(make_parts(mcp_allowed_origins="https://app.example, https://other.example:8443"))
    token = make_token("rev")
    assert rpc(server.client, token, "ping", headers={"Origin": "https://app.example"}).status == 200
    assert rpc(server.client, token, "ping", headers={"Origin": "https://other.example:8443"}).status == 200
    assert rpc(server.client, token, "ping", headers={"Origin": "https://other.example"}).status == 403


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "192.168.1.10", "localhost.evil.example",
                                  "[::1"])
def test_a_foreign_host_is_refused_on_a_loopback_server(api, make_token, host):
    reply = rpc(api, make_token("rev"), "ping", headers={"Host": host})
    assert reply.status == 421
    assert reply.body["error"]["data"] == {"reason": "host_not_allowed"}


@pytest.mark.parametrize("host", ["localhost", "localhost:8765", "127.0.0.1:1", "[::1]:8765"])
def test_loopback_hosts_are_accepted(api, make_token, host):
    assert rpc(api, make_token("rev"), "ping", headers={"Host": host}).status == 200


def test_the_host_check_applies_only_to_a_loopback_bind(parts, make_token):
    """Bound to all interfaces, any Host is fine (a token still is required); the Origin check remains."""
    app = create_app(parts.bridge, parts.verifier, bind_host="0.0.0.0")
    token = make_token("rev")
    assert wsgi_post(app, token, {"Host": "bridge.example:8765"})[0].startswith("200")
    assert wsgi_post(app, token, {"Host": "bridge.example", "Origin": "https://evil.example"})[0].startswith("403")
    loopback = create_app(parts.bridge, parts.verifier, bind_host="127.0.0.1")
    assert wsgi_post(loopback, token, {"Host": "bridge.example:8765"})[0].startswith("421")


def wsgi_post(app, token: str, headers: dict[str, str]) -> tuple[str, bytes]:
    """Call the WSGI app in-process with a ping (for a bind address no test server uses)."""
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/mcp", "SERVER_NAME": "test", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
               "wsgi.url_scheme": "http", "REMOTE_ADDR": "10.0.0.5", "HTTP_AUTHORIZATION": f"Bearer {token}",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    status: list[str] = []
    chunks = app(environ, lambda s, h, e=None: status.append(s))
    return status[0], b"".join(chunks)


# --------------------------------------------------------------------------------------------------- units
def test_the_version_table_agrees_with_the_sdk():
    assert set(mcp_endpoint.HANDSHAKE_VERSIONS) <= set(mt.version.HANDSHAKE_PROTOCOL_VERSIONS)
    assert set(mcp_endpoint.STATELESS_VERSIONS) <= set(mt.version.MODERN_PROTOCOL_VERSIONS)
    assert mcp_endpoint.NEWEST_HANDSHAKE_VERSION == mt.version.LATEST_HANDSHAKE_VERSION
    assert mcp_endpoint.HEADERLESS_VERSION in mcp_endpoint.HANDSHAKE_VERSIONS
    assert list(mcp_endpoint.VERSIONS) == sorted(mcp_endpoint.VERSIONS)


def test_the_allowed_origins_setting():
    assert Settings.load({}, env={}).mcp_allowed_origins == ()
    loaded = Settings.load({}, env={"BRIDGE_MCP_ALLOWED_ORIGINS": " https://App.example/ ,http://[::1]:3000,"})
    assert loaded.mcp_allowed_origins == ("https://app.example", "http://[::1]:3000")
    with pytest.raises(Exception, match="BRIDGE_MCP_ALLOWED_ORIGINS"):
        Settings.load({}, env={"BRIDGE_MCP_ALLOWED_ORIGINS": "*"})
