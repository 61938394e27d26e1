"""`POST /mcp`: the `/v1` commands as Model Context Protocol tools (JSON-RPC 2.0 over Streamable HTTP, JSON replies).

Stateless: every request carries the bearer token and is answered with one JSON body (no SSE stream, so `GET /mcp`
is 405). Messages and results are the official SDK's types (`mcp.types`); tools are the command table, with the
same pydantic input models and services as `/v1`, so authorization, audit and errors are identical. A refused or
invalid tool call is a tool result with `isError: true` whose structured content is the usual error envelope;
protocol mistakes are JSON-RPC errors.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import mcp.types as mt
from pydantic import ValidationError

import bridge as bridge_pkg
from bridge.domain.authz import Principal
from bridge.errors import BridgeError, InvalidArgument
from bridge.http.envelope import validation_error
from bridge.services.commands import COMMANDS
from bridge.services.core import Bridge, Call

KNOWN_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", mt.LATEST_PROTOCOL_VERSION)


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


@functools.cache
def tool_list() -> list[dict[str, Any]]:
    """Every command as an MCP tool (input and output schemas from the validating models)."""
    return [_dump(mt.Tool(name=c.name, description=c.summary, input_schema=c.input.model_json_schema(),
                          output_schema=c.output.model_json_schema())) for c in COMMANDS.values()]


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def parse_error(message: str) -> dict[str, Any]:
    """The JSON-RPC answer to a body that is not acceptable JSON."""
    return _error(None, mt.PARSE_ERROR, message)


def _result(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def handle(bridge: Bridge, principal: Principal, request_id: str, message: Any,
           envelope: Any) -> dict[str, Any] | None:
    """Answer one JSON-RPC message; None for a notification (HTTP 202, no body)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        return _error(message.get("id") if isinstance(message, dict) else None, mt.INVALID_REQUEST,
                      "expected one JSON-RPC 2.0 request object (batches are not supported)")
    method, params, rpc_id = message["method"], message.get("params") or {}, message.get("id")
    if "id" not in message:
        return None  # notifications (initialized, cancelled, ...) need no answer
    if not isinstance(params, dict):
        return _error(rpc_id, mt.INVALID_PARAMS, "params must be an object")
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in KNOWN_VERSIONS else mt.LATEST_PROTOCOL_VERSION
        return _result(rpc_id, _dump(mt.InitializeResult(
            protocol_version=version, capabilities=mt.ServerCapabilities(tools=mt.ToolsCapability(list_changed=False)),
            server_info=mt.Implementation(name="agent-bridge", version=bridge_pkg.__version__),
            instructions="Coordinate with other agent sessions: read_messages since your cursor, post_message"
                         " findings and fixes as events, ack_read what you handled.")))
    if method == "ping":
        return _result(rpc_id, {})
    if method == "tools/list":
        return _result(rpc_id, {"tools": tool_list()})
    if method == "tools/call":
        return _call_tool(bridge, principal, request_id, rpc_id, params, envelope)
    return _error(rpc_id, mt.METHOD_NOT_FOUND, f"method {method!r} is not supported")


def _call_tool(bridge: Bridge, principal: Principal, request_id: str, rpc_id: Any, params: dict[str, Any],
               envelope: Any) -> dict[str, Any]:
    command = COMMANDS.get(params.get("name"))  # type: ignore[arg-type]
    if command is None:
        return _error(rpc_id, mt.INVALID_PARAMS, f"unknown tool {params.get('name')!r}")
    arguments = params.get("arguments") or {}
    try:
        if not isinstance(arguments, dict):
            raise InvalidArgument("arguments must be an object", {"field": "arguments"})
        try:
            payload = command.input.model_validate(arguments)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        output = command.handler(bridge, Call(principal, request_id), payload)
        is_error, structured = False, output
    except BridgeError as error:
        is_error, structured = True, envelope(error)
    result = mt.CallToolResult(content=[mt.TextContent(type="text", text=json.dumps(structured))],
                               structured_content=structured, is_error=is_error)
    return _result(rpc_id, _dump(result))
