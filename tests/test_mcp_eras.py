"""Interop: the official Python MCP SDK client over Streamable HTTP against the real server, in both protocol eras.

`mode="legacy"` is the SDK's handshake: `initialize` offering its newest handshake version (2025-11-25), then
`notifications/initialized`. `mode="auto"` probes `server/discover` at 2026-07-28 and, when the server lists that
version, adopts it: every request then carries the `_meta` envelope and the routing headers. The SDK validates each
successful result's `structuredContent` against the tool's output schema, so a passing call is also a schema check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import mcp.types as mt
import pytest
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from bridge.http import mcp_endpoint
from bridge.services.commands import COMMANDS

ERAS = {"legacy": "2025-11-25", "auto": "2026-07-28"}  # SDK connect mode -> the version it ends up speaking


def with_client(url: str, token: str, mode: str, work: Callable[[Client], Awaitable[Any]]) -> Any:
    """Connect the SDK client as `token` in `mode`, run `work(client)`, disconnect; its result."""
    async def run() -> Any:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http, \
                Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client:
            return await work(client)

    return asyncio.run(run())


@pytest.mark.parametrize("mode", list(ERAS))
def test_connects_and_lists_tools_written_for_a_model(live_server, make_token, mode):
    async def work(client: Client) -> tuple[str, str | None, Any, list[mt.Tool]]:
        handshake = client.session.initialize_result or client.session.discover_result
        return client.protocol_version, client.instructions, handshake, (await client.list_tools()).tools

    version, instructions, handshake, tools = with_client(live_server.url, make_token("rev"), mode, work)
    assert version == ERAS[mode]
    if mode == "legacy":
        assert isinstance(handshake, mt.InitializeResult) and handshake.server_info.name == "agent-bridge"
    else:
        assert isinstance(handshake, mt.DiscoverResult)
        assert handshake.supported_versions == list(mcp_endpoint.VERSIONS)
        assert (handshake.cache_scope, handshake.result_type) == ("public", "complete")
    assert instructions and all(word in instructions for word in ("inbox", "read_messages", "post_message",
                                                                   "ack_read", "wait_ms"))
    by_name = {t.name: t for t in tools}
    assert set(by_name) == set(COMMANDS)
    for name, tool in by_name.items():
        assert tool.title == COMMANDS[name].title and tool.description == COMMANDS[name].description
        assert tool.annotations is not None and tool.annotations.title == COMMANDS[name].title
        assert tool.annotations.destructive_hint is False and tool.annotations.open_world_hint is False
    assert by_name["read_messages"].annotations.read_only_hint is True
    assert by_name["post_message"].annotations.read_only_hint is False
    assert by_name["post_message"].annotations.idempotent_hint is False
    assert by_name["ack_read"].annotations.idempotent_hint is True


@pytest.mark.parametrize("mode", list(ERAS))
def test_create_post_read_and_tool_errors(live_server, make_token, mode):
    """create_thread / post_message / read_messages succeed; a bad argument and a forbidden action come back as
    `isError` results naming the bridge's code, without structured content."""
    coord, rev = make_token("coord", "coordinator"), make_token("rev")

    async def as_coordinator(client: Client) -> dict[str, Any]:
        created = await client.call_tool("create_thread", {"title": f"sdk {mode}", "type": "workflow",
                                                           "participants": ["rev"]})
        thread_id = created.structured_content["thread_id"]
        posted = await client.call_tool("post_message", {
            "thread_id": thread_id, "schema_version": 1, "kind": "event", "body": "null deref in parse()",
            "metadata": {"event_type": "finding_reported", "severity": "high", "file": "a.py", "line": 3}})
        read = await client.call_tool("read_messages", {"thread_id": thread_id, "since_seq": 0})
        bad = await client.call_tool("post_message", {"thread_id": thread_id, "kind": "chat", "body": "hi"})
        return {"created": created, "posted": posted, "read": read, "bad": bad}

    async def as_participant(client: Client) -> mt.CallToolResult:
        return await client.call_tool("create_thread", {"title": "mine", "type": "workflow",
                                                        "participants": ["rev"]})

    results = with_client(live_server.url, coord, mode, as_coordinator)
    for name in ("created", "posted", "read"):
        assert results[name].is_error is False, results[name]
    assert results["created"].structured_content["status"] == "active"
    assert results["posted"].structured_content["seq"] == 1
    messages = results["read"].structured_content["messages"]
    assert [(m["seq"], m["kind"], m["metadata"]["event_type"]) for m in messages] == [
        (1, "event", "finding_reported")]

    bad = results["bad"]
    assert bad.is_error is True and bad.structured_content is None
    assert "INVALID_ARGUMENT" in bad.content[0].text and "schema_version" in bad.content[0].text

    forbidden = with_client(live_server.url, rev, mode, as_participant)
    assert forbidden.is_error is True and forbidden.structured_content is None
    assert forbidden.content[0].text.startswith("FORBIDDEN: ")
    assert live_server.client.ok("list_threads", coord)["threads"][0]["title"] == f"sdk {mode}"


def test_a_pinned_2026_client_needs_no_discover(live_server, make_token):
    """A client that adopts 2026-07-28 outright (no probe) is served per request."""
    async def work(client: Client) -> mt.CallToolResult:
        return await client.call_tool("inbox", {})

    result = with_client(live_server.url, make_token("rev"), "2026-07-28", work)
    assert result.is_error is False and result.structured_content == {"threads": []}
    assert result.result_type == "complete"
