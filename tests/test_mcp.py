"""`POST /mcp`: the commands as MCP tools over JSON-RPC, on a real server with real tokens."""

from __future__ import annotations

from bridge.services.commands import COMMANDS


def rpc(api, token, method, params=None, rpc_id=1, **kwargs):
    message = {"jsonrpc": "2.0", "method": method, **({"params": params} if params is not None else {})}
    if rpc_id is not None:
        message["id"] = rpc_id
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.raw("POST", "/mcp", json=message, headers={**headers, "Accept": "application/json, text/event-stream"},
                   **kwargs)


def test_initialize_negotiates_and_lists_every_command_as_a_tool(api, make_token):
    token = make_token("rev")
    init = rpc(api, token, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": "test", "version": "1"}})
    assert init.status == 200
    result = init.body["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert result["serverInfo"]["name"] == "agent-bridge"
    assert rpc(api, token, "notifications/initialized", rpc_id=None).status == 202
    tools = rpc(api, token, "tools/list", rpc_id=2).body["result"]["tools"]
    assert {t["name"] for t in tools} == set(COMMANDS)
    post = next(t for t in tools if t["name"] == "post_message")
    assert set(post["inputSchema"]["required"]) == {"thread_id", "schema_version", "kind", "body"}
    assert rpc(api, token, "ping", rpc_id=3).body == {"jsonrpc": "2.0", "id": 3, "result": {}}


def test_unknown_protocol_version_gets_the_latest(api, make_token):
    init = rpc(api, make_token("rev"), "initialize", {"protocolVersion": "1999-01-01", "capabilities": {},
                                                      "clientInfo": {"name": "t", "version": "1"}})
    assert init.body["result"]["protocolVersion"] > "2025"


def test_tool_calls_use_the_same_services_rules_and_envelope(api, make_token):
    coord, rev, outsider = make_token("coord", "coordinator"), make_token("rev"), make_token("outsider")
    created = rpc(api, coord, "tools/call", {"name": "create_thread", "arguments": {
        "title": "via mcp", "type": "workflow", "participants": ["rev"]}}).body["result"]
    assert created["isError"] is False
    thread_id = created["structuredContent"]["thread_id"]
    posted = rpc(api, rev, "tools/call", {"name": "post_message", "arguments": {
        "thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": "hello from mcp"}}).body["result"]
    assert posted["isError"] is False and posted["structuredContent"]["seq"] == 1
    read = api.ok("read_messages", coord, thread_id=thread_id)
    assert [(m["sender_agent_id"], m["body"]) for m in read["messages"]] == [("rev", "hello from mcp")]

    refused = rpc(api, outsider, "tools/call", {"name": "read_messages", "arguments": {"thread_id": thread_id}})
    assert refused.status == 200 and refused.body["result"]["isError"] is True
    assert refused.body["result"]["structuredContent"]["error"]["code"] == "FORBIDDEN"
    invalid = rpc(api, rev, "tools/call", {"name": "post_message", "arguments": {"thread_id": thread_id, "bogus": 1}})
    error = invalid.body["result"]["structuredContent"]["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert "bogus" in {f["field"] for f in error["details"]["fields"]}


def test_protocol_errors(api, make_token):
    token = make_token("rev")
    assert rpc(api, token, "tools/call", {"name": "no_such_tool", "arguments": {}}).body["error"]["code"] == -32602
    assert rpc(api, token, "resources/list").body["error"]["code"] == -32601
    batch = api.raw("POST", "/mcp", json=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
                    headers={"Authorization": f"Bearer {token}"})
    assert batch.body["error"]["code"] == -32600
    garbage = api.raw("POST", "/mcp", data=b"{nope", headers={"Authorization": f"Bearer {token}",
                                                               "Content-Type": "application/json"})
    assert garbage.status == 400 and garbage.body["error"]["code"] == -32700


def test_mcp_needs_a_valid_token_and_get_is_not_offered(api):
    reply = rpc(api, None, "tools/list")
    assert reply.status == 401 and reply.code == "UNAUTHORIZED"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.raw("GET", "/mcp").status == 405


def test_the_official_sdk_client_talks_to_the_endpoint(live_server, make_token):
    """Interop: the `mcp` SDK's own Streamable HTTP client initializes, lists tools and calls one."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    token = make_token("coord", "coordinator")

    async def session_run():
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
                streamable_http_client(f"{live_server.url}/mcp", http_client=http) as streams, \
                ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            tools = await session.list_tools()
            created = await session.call_tool("create_thread", {"title": "sdk", "type": "conversation",
                                                                "participants": ["rev"]})
            return {t.name for t in tools.tools}, created

    names, created = asyncio.run(session_run())
    assert names == set(COMMANDS)
    assert created.is_error is False
    assert created.structured_content["status"] == "active"
    thread = live_server.client.ok("get_thread", token, thread_id=created.structured_content["thread_id"])
    assert thread["title"] == "sdk"
