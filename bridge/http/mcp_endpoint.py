"""`POST /mcp`: the command table as MCP tools, for both protocol eras, on one Streamable HTTP endpoint.

One JSON-RPC message per POST, one plain JSON reply (never SSE, so `GET /mcp` is 405), the bearer token on every
request and nothing kept between requests. `VERSIONS` says which era a protocol version belongs to:

- handshake (2025-03-26 .. 2025-11-25): `initialize` negotiates a version that the client then names in the
  `MCP-Protocol-Version` header (a request without it is 2025-03-26, as the spec says); `notifications/initialized`
  is accepted, `ping` answered; no session id is ever required or minted.
- stateless (2026-07-28): each request carries its version, client info and capabilities in `params._meta`, and the
  `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers must agree with the body; `server/discover` replaces
  `initialize`; every result carries `resultType` (and `ttlMs`/`cacheScope` where cacheable).

The wire shapes are the official SDK's: a request is checked against the SDK's surface for its version
(`mcp.types.methods`), a result is serialised through it (so each era gets exactly its own fields) and the
2026-07-28 header ladder is the SDK's `classify_inbound_request`.

A tool call runs through the caller's `ToolRunner`, the very path of `/v1` (validation, authorization, audit). A
refused or invalid call is a tool result with `isError: true` whose text names the bridge's error code, message and
details, and which has no `structuredContent` (clients validate that against the tool's output schema); only
protocol mistakes are JSON-RPC errors.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import mcp.types as mt
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundLadderRejection, classify_inbound_request
from mcp.types import methods as sdk_methods
from pydantic import ValidationError

import bridge as bridge_pkg
from bridge.domain.jsonparse import parse_json
from bridge.errors import BridgeError
from bridge.services.commands import COMMANDS, Command

log = logging.getLogger("bridge.http")

Era = Literal["handshake", "stateless"]

VERSIONS: Mapping[str, Era] = MappingProxyType({
    "2025-03-26": "handshake",
    "2025-06-18": "handshake",
    "2025-11-25": "handshake",
    "2026-07-28": "stateless",
})
"""The one version table: every protocol version served, oldest first, and its era."""

HANDSHAKE_VERSIONS = tuple(v for v, era in VERSIONS.items() if era == "handshake")
STATELESS_VERSIONS = tuple(v for v, era in VERSIONS.items() if era == "stateless")
NEWEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]  # what `initialize` offers for a version it does not serve
HEADERLESS_VERSION = mt.DEFAULT_NEGOTIATED_VERSION  # a request without MCP-Protocol-Version (spec: 2025-03-26)

VERSION_HEADER = "mcp-protocol-version"
LIST_TTL_MS = 300_000  # tools/list and server/discover: the tool table only changes with the bridge's version

INSTRUCTIONS = (
    "Shared threads connect you with the other agents on this task; your identity (agent id, role, workspace) "
    "comes from your token, so never pass it. The loop: `inbox` (threads with unread messages, your last_read_seq "
    "in each) -> `read_messages` from that seq -> act -> `post_message` -> `ack_read` up to the last seq you "
    "handled (that is how the bridge knows you acted). Post work items as kind 'event' with metadata.event_type: "
    "finding_reported (a problem: severity, file, line), fix_pushed (you fixed a finding: commit, in_reply_to it), "
    "finding_verified (a fix checks out), finding_rejected (a finding or fix does not hold: say why), "
    "re_review_requested (ask for another look); kind 'chat' for the rest. To wait, pass wait_ms (up to 30000) to "
    "`inbox` or `read_messages` instead of polling. A thread that repeats itself (the same finding again and again, "
    "or many turns without a fix or a verification) is blocked by the loop guard and escalated to a coordinator. "
    "Writes have a per-agent quota: a RATE_LIMITED result gives retry_after in seconds; wait that long, then retry "
    "with the same idempotency_key."
)

ToolRunner = Callable[[Command, dict[str, Any]], dict[str, Any]]
"""Validate the arguments and run the command as the caller; raises BridgeError (already audited)."""

_CODE_NAMES: Mapping[int, str] = MappingProxyType({
    mt.PARSE_ERROR: "PARSE_ERROR", mt.INVALID_REQUEST: "INVALID_REQUEST", mt.METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    mt.INVALID_PARAMS: "INVALID_PARAMS", mt.INTERNAL_ERROR: "INTERNAL", mt.HEADER_MISMATCH: "HEADER_MISMATCH",
    mt.MISSING_REQUIRED_CLIENT_CAPABILITY: "MISSING_REQUIRED_CLIENT_CAPABILITY",
    mt.UNSUPPORTED_PROTOCOL_VERSION: "UNSUPPORTED_PROTOCOL_VERSION",
})
"""JSON-RPC error codes as the `code` label of the request metrics."""

_KNOWN_METHODS = sdk_methods.SPEC_CLIENT_METHODS | sdk_methods.SPEC_CLIENT_NOTIFICATION_METHODS


@dataclass(frozen=True)
class Reply:
    """The HTTP answer to one POST, and how to count it."""

    status: int
    body: dict[str, Any] | None  # None: no body and no content type (202)
    method: str  # a spec method name, or "other", "response", "invalid": a bounded metrics label
    version: str = ""  # the protocol version the message was served at, when one was
    tool: str | None = None  # the command a tools/call ran
    code: str = "OK"  # OK, the bridge's error code of a tool error, or the JSON-RPC error's name


@dataclass(frozen=True)
class Answer:
    """What a method handler returns: the result, and for tool calls the tool and its outcome."""

    result: mt.Result
    tool: str | None = None
    code: str = "OK"


@dataclass(frozen=True)
class Exchange:
    """One request being answered: the version it is served at and how to run tools as the caller."""

    version: str
    run_tool: ToolRunner
    request_id: str


class ProtocolError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


# ------------------------------------------------------------------------------------------- transport security
def transport_refusal(headers: Mapping[str, str], allowed_origins: tuple[str, ...], bind_host: str) -> Reply | None:
    """DNS-rebinding protection: 403 for an `Origin` that is neither loopback nor configured; 421 for a `Host`
    that is not a loopback name while the server listens on loopback. None when the request may proceed."""
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, allowed_origins):
        return _refusal(403, "ORIGIN_NOT_ALLOWED", f"Origin {origin!r} is not allowed (loopback origins and "
                                                   "BRIDGE_MCP_ALLOWED_ORIGINS only)")
    if _is_loopback_name(bind_host) and not _is_loopback_name(_hostname(headers.get("host"))):
        return _refusal(421, "HOST_NOT_ALLOWED", f"Host {headers.get('host')!r} is not a loopback name and this "
                                                 "server listens on loopback")
    return None


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """True for an http(s) origin on a loopback host, or one of the configured origins (normalised)."""
    normalised = origin.strip().rstrip("/").lower()
    if normalised in allowed:
        return True
    try:
        parts = urlsplit(normalised)
        return parts.scheme in ("http", "https") and _is_loopback_name(parts.hostname)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return False


def _hostname(host: str | None) -> str | None:
    try:
        return urlsplit(f"//{host}").hostname if host else None
    except ValueError:
        return None


def _is_loopback_name(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refusal(status: int, code: str, message: str) -> Reply:
    return Reply(status, _error_body(None, mt.INVALID_REQUEST, message, {"reason": code.lower()}), "invalid",
                 code=code)


# ------------------------------------------------------------------------------------------- messages
def handle(raw: bytes, headers: Mapping[str, str], run_tool: ToolRunner, request_id: str) -> Reply:
    """Answer one POSTed body from an authenticated caller (`headers` keyed by lower-case name)."""
    header_version = headers.get(VERSION_HEADER)
    era: Era = "stateless" if header_version in STATELESS_VERSIONS else "handshake"
    try:
        message = parse_json(raw)
    except BridgeError as error:
        return _error_reply(era, None, mt.PARSE_ERROR, f"Parse error: {error.message}", method="invalid")
    if not isinstance(message, dict):
        problem = ("batches are not supported: send one JSON-RPC message per POST" if isinstance(message, list)
                   else "the body must be one JSON-RPC message (an object)")
        return _error_reply(era, None, mt.INVALID_REQUEST, problem, method="invalid")
    method = _method_label(message)
    if header_version is not None and header_version not in VERSIONS:
        return _error_reply(era, _id_of(message), *_unsupported(header_version), method=method)
    if "method" not in message:
        return _accept(era, header_version, message, mt.JSONRPCResponse, mt.JSONRPCError, label="response")
    if "id" not in message:
        return _accept(era, header_version, message, mt.JSONRPCNotification, label=method)
    return _answer_request(message, headers, header_version, run_tool, request_id)


def _accept(era: Era, header_version: str | None, message: dict[str, Any], *shapes: type[Any], label: str) -> Reply:
    """202 and no body for a well-formed notification or response from the client (nothing to answer)."""
    for shape in shapes:
        try:
            shape.model_validate(message)
        except ValidationError:
            continue
        return Reply(202, None, label, header_version or HEADERLESS_VERSION)
    return _error_reply(era, None, mt.INVALID_REQUEST, "not a JSON-RPC 2.0 request, notification or response",
                        method="invalid")


def _answer_request(message: dict[str, Any], headers: Mapping[str, str], header_version: str | None,
                    run_tool: ToolRunner, request_id: str) -> Reply:
    rpc_id, method, params = _id_of(message), message.get("method"), message.get("params")
    label = _method_label(message)
    era: Era = "stateless" if header_version in STATELESS_VERSIONS or _has_envelope(params) else "handshake"
    version = ""
    try:
        _check_envelope(message)
        version = _served_version(era, message, headers, header_version)
        answer = _dispatch(Exchange(version, run_tool, request_id), method, params)
        result = _wire(method, version, answer.result)
    except ProtocolError as error:
        return _error_reply(era, rpc_id, error.code, error.message, error.data, method=label, version=version)
    except Exception:
        log.exception("MCP request failed", extra={"event": "internal_error", "request_id": request_id})
        return _error_reply(era, rpc_id, mt.INTERNAL_ERROR, "internal error", method=label, version=version)
    return Reply(200, {"jsonrpc": "2.0", "id": rpc_id, "result": result}, label, version, answer.tool, answer.code)


def _check_envelope(message: dict[str, Any]) -> None:
    """`jsonrpc: "2.0"`, a string or integer id, a string method, params an object when present."""
    try:
        mt.JSONRPCRequest.model_validate({**message, "params": None})
    except ValidationError:
        raise ProtocolError(mt.INVALID_REQUEST, 'not a JSON-RPC 2.0 request: needs "jsonrpc": "2.0", a string or '
                                                "integer id and a string method") from None
    if message.get("params") is not None and not isinstance(message["params"], dict):
        raise ProtocolError(mt.INVALID_PARAMS, "params must be an object")


def _served_version(era: Era, message: dict[str, Any], headers: Mapping[str, str], header_version: str | None) -> str:
    """The version a request is served at: the header (or its default) before 2026-07-28; from then on the
    `_meta` envelope, which must agree with the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers."""
    if era == "handshake":
        return header_version or HEADERLESS_VERSION
    verdict = classify_inbound_request(message, headers=headers, supported_modern_versions=STATELESS_VERSIONS)
    if isinstance(verdict, InboundLadderRejection):
        if verdict.code == mt.UNSUPPORTED_PROTOCOL_VERSION:
            raise ProtocolError(*_unsupported(str(verdict.data.get("requested"))))
        raise ProtocolError(verdict.code, verdict.message, verdict.data)
    return verdict.protocol_version


def _dispatch(exchange: Exchange, method: str, params: dict[str, Any] | None) -> Answer:
    handler = _HANDLERS.get(method)
    if handler is None or (method, exchange.version) not in sdk_methods.CLIENT_REQUESTS:
        raise ProtocolError(mt.METHOD_NOT_FOUND, f"Method not found: {method!r} at protocol version "
                                                 f"{exchange.version}", method)
    try:
        sdk_methods.validate_client_request(method, exchange.version, params)
    except ValidationError as exc:
        raise ProtocolError(mt.INVALID_PARAMS, "Invalid params: " + _problems(exc)) from None
    return handler(exchange, params or {})


# ------------------------------------------------------------------------------------------- methods
def _initialize(exchange: Exchange, params: dict[str, Any]) -> Answer:
    asked = params["protocolVersion"]
    return Answer(mt.InitializeResult(
        protocol_version=asked if asked in HANDSHAKE_VERSIONS else NEWEST_HANDSHAKE_VERSION,
        capabilities=_CAPABILITIES, server_info=_SERVER_INFO, instructions=INSTRUCTIONS))


def _ping(exchange: Exchange, params: dict[str, Any]) -> Answer:
    return Answer(mt.EmptyResult())


def _discover(exchange: Exchange, params: dict[str, Any]) -> Answer:
    return Answer(mt.DiscoverResult(supported_versions=list(VERSIONS), capabilities=_CAPABILITIES,
                                    instructions=INSTRUCTIONS, ttl_ms=LIST_TTL_MS, cache_scope="public"))


def _list_tools(exchange: Exchange, params: dict[str, Any]) -> Answer:
    return Answer(mt.ListToolsResult(tools=list(tools()), ttl_ms=LIST_TTL_MS, cache_scope="public"))


def _call_tool(exchange: Exchange, params: dict[str, Any]) -> Answer:
    _check_tool_call_shape(params)
    request = mt.CallToolRequestParams.model_validate(params, by_name=False)
    command = COMMANDS.get(request.name)
    if command is None:
        raise ProtocolError(mt.INVALID_PARAMS, f"Unknown tool: {request.name!r}", {"tool": request.name})
    try:
        output = exchange.run_tool(command, request.arguments or {})
    except BridgeError as error:
        failure = mt.TextContent(type="text", text=error_text(error, exchange.request_id))
        return Answer(mt.CallToolResult(content=[failure], is_error=True), command.name, error.code)
    text = json.dumps(output, ensure_ascii=False, separators=(",", ":"))
    return Answer(mt.CallToolResult(content=[mt.TextContent(type="text", text=text)], structured_content=output),
                  command.name)


def _check_tool_call_shape(params: Any) -> None:
    """`tools/call` params are an object whose `name` is a string and whose `arguments`, when given, are an object:
    checked here, before any lookup, whatever the SDK's validation of the version let through."""
    if not isinstance(params, dict):
        raise ProtocolError(mt.INVALID_PARAMS, "Invalid params: params must be an object")
    if not isinstance(params.get("name"), str):
        raise ProtocolError(mt.INVALID_PARAMS, "Invalid params: params.name must be a string (the tool's name)")
    if params.get("arguments") is not None and not isinstance(params["arguments"], dict):
        raise ProtocolError(mt.INVALID_PARAMS, "Invalid params: params.arguments must be an object")


_HANDLERS: Mapping[str, Callable[[Exchange, dict[str, Any]], Answer]] = MappingProxyType({
    "initialize": _initialize, "ping": _ping, "server/discover": _discover, "tools/list": _list_tools,
    "tools/call": _call_tool,
})
"""The methods served; which era offers which is the SDK's per-version surface (`CLIENT_REQUESTS`)."""

_CAPABILITIES = mt.ServerCapabilities(tools=mt.ToolsCapability(list_changed=False))
_SERVER_INFO = mt.Implementation(name="agent-bridge", title="Agent Bridge", version=bridge_pkg.__version__)


@functools.cache
def tools() -> tuple[mt.Tool, ...]:
    """Every command as an MCP tool, written for a model: title, description, schemas and behaviour hints."""
    return tuple(mt.Tool(
        name=c.name, title=c.title, description=c.description, input_schema=c.input.model_json_schema(),
        output_schema=c.output.model_json_schema(),
        annotations=mt.ToolAnnotations(title=c.title, read_only_hint=not c.writes, destructive_hint=False,
                                       idempotent_hint=c.idempotent, open_world_hint=False),
    ) for c in COMMANDS.values())


def error_text(error: BridgeError, request_id: str) -> str:
    """A refused or invalid call as a model reads it: `CODE: message`, each offending field, then the rest."""
    lines = [f"{error.code}: {error.message}"]
    details = dict(error.details)
    fields = details.pop("fields", None) if isinstance(details.get("fields"), list) else None
    for problem in fields or []:
        lines.append(f"- {problem.get('field')}: {problem.get('problem')}" if isinstance(problem, dict)
                     else f"- {problem}")
    if error.retry_after is not None:
        lines.append(f"retry_after: {error.retry_after} s")
    if details:
        lines.append("details: " + json.dumps(details, ensure_ascii=False, sort_keys=True, default=str))
    lines.append(f"request_id: {request_id}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- wire helpers
def _wire(method: str, version: str, result: mt.Result) -> dict[str, Any]:
    """A result as the SDK's surface for `version` shapes it; 2026-07-28 results also name the server."""
    dumped = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    wire = sdk_methods.serialize_server_result(method, version, dumped)
    if VERSIONS[version] == "stateless":
        wire.setdefault("resultType", "complete")
        wire["_meta"] = {**wire.get("_meta", {}), mt.SERVER_INFO_META_KEY: _SERVER_INFO.model_dump(
            by_alias=True, exclude_none=True, mode="json")}
    return wire


def _error_reply(era: Era, rpc_id: Any, code: int, message: str, data: Any = None, *, method: str,
                 version: str = "") -> Reply:
    return Reply(_status(era, code), _error_body(rpc_id, code, message, data), method, version,
                 code=_CODE_NAMES.get(code, str(code)))


def _error_body(rpc_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error = mt.ErrorData(code=code, message=message, data=data).model_dump(exclude_none=True, mode="json")
    return {"jsonrpc": "2.0", "id": rpc_id, "error": error}


def _status(era: Era, code: int) -> int:
    """The HTTP status of a JSON-RPC error: 2026-07-28's table (404 unknown method, 400 bad params or headers);
    before it, errors answering a readable request ride a 200 and only unreadable messages are 400."""
    if code == mt.INTERNAL_ERROR:
        return 500
    if era == "stateless":
        return ERROR_CODE_HTTP_STATUS.get(code, 200)
    return 400 if code in (mt.PARSE_ERROR, mt.INVALID_REQUEST, mt.UNSUPPORTED_PROTOCOL_VERSION) else 200


def _unsupported(requested: str) -> tuple[int, str, dict[str, Any]]:
    data = mt.UnsupportedProtocolVersionErrorData(supported=list(VERSIONS), requested=requested)
    return mt.UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", data.model_dump(mode="json")


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                     for e in exc.errors(include_url=False, include_input=False))


def _id_of(message: dict[str, Any]) -> str | int | None:
    """The request id to echo: a string or an integer, else null."""
    rpc_id = message.get("id")
    return rpc_id if isinstance(rpc_id, str) or (isinstance(rpc_id, int) and not isinstance(rpc_id, bool)) else None


def _method_label(message: dict[str, Any]) -> str:
    method = message.get("method")
    if method is None and "id" in message:
        return "response"
    return method if isinstance(method, str) and method in _KNOWN_METHODS else "other"


def _has_envelope(params: Any) -> bool:
    """A 2026-07-28 request: `params._meta` names its protocol version (never sent before that revision)."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and mt.PROTOCOL_VERSION_META_KEY in meta
