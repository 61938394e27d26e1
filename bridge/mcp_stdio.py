"""`bridge mcp`: an MCP server on stdin/stdout that forwards every message to a running bridge's `POST /mcp`.

One newline-delimited JSON-RPC message in, one HTTP POST (bearer token, JSON, the MCP routing headers), the JSON
reply out as one line. Notifications get no line (the bridge answers 202). The protocol version goes in the
`MCP-Protocol-Version` header: the one a message's `_meta` carries (2026-07-28 per-request envelope, with
`Mcp-Method` and `Mcp-Name` as the SDK's HTTP client sends them), else the one `initialize` negotiated.

Only protocol messages reach stdout: the process's own fd 1 is pointed at stderr, so a stray print or a library's
warning cannot corrupt the stream; logs are JSON lines on stderr. EOF on stdin ends it with exit 0. A bridge that is
down, refuses the token or answers something other than JSON-RPC becomes a tool result with `isError: true` for
`tools/call` and a JSON-RPC error for other requests; nothing here raises out of the loop. Stdlib only (http.client,
no SDK); one message at a time, in order.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}  # mirrored as Mcp-Name
PARSE_ERROR, INVALID_REQUEST, INTERNAL_ERROR = -32700, -32600, -32603
TIMEOUT = 60.0  # seconds per POST: more than the longest long-poll (wait_ms <= 30 s)
HEADER_SAFE = re.compile(r"[\x20-\x7e]*")

log = logging.getLogger("bridge.mcp")


class BridgeUnavailable(Exception):
    """The bridge could not be reached or did not answer with JSON-RPC; the message says why. `refused`: it answered
    with its own error envelope (a refused token, an oversized body) rather than not at all."""

    def __init__(self, reason: str, refused: bool = False):
        super().__init__(reason)
        self.refused = refused


def header_value(value: str) -> str:
    """A header value as the MCP SDK encodes it: printable ASCII as is, anything else base64 in `=?base64?…?=`."""
    if HEADER_SAFE.fullmatch(value) and value == value.strip() and not value.startswith("=?base64?"):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


def envelope_version(message: dict[str, Any]) -> str | None:
    """The protocol version a 2026-07-28-style request carries in `params._meta`, if any."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def routing_headers(message: dict[str, Any], negotiated: str | None) -> dict[str, str]:
    """`MCP-Protocol-Version` (and, for an enveloped request, `Mcp-Method`/`Mcp-Name`) for one message."""
    method = message.get("method")
    version = envelope_version(message)
    if version is not None and isinstance(method, str):
        headers = {"MCP-Protocol-Version": version, "Mcp-Method": method}
        params = message.get("params")
        name = params.get(NAME_PARAMS[method]) if method in NAME_PARAMS and isinstance(params, dict) else None
        if isinstance(name, str):
            headers["Mcp-Name"] = header_value(name)
        return headers
    if negotiated is not None and method != "initialize":
        return {"MCP-Protocol-Version": negotiated}
    return {}


def sse_messages(body: bytes) -> list[Any]:
    """The JSON data of each event in a `text/event-stream` body."""
    messages = []
    for event in re.split(r"\r?\n\r?\n", body.decode("utf-8", "replace")):
        data = "\n".join(line[5:].removeprefix(" ") for line in event.splitlines() if line.startswith("data:"))
        if data.strip():
            messages.append(json.loads(data))
    return messages


def refusal(status: int, document: Any) -> str:
    """Why a JSON answer that is not JSON-RPC (the bridge's error envelope) was refused, in one line."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status} with a JSON body that is not JSON-RPC"
    reason = f"HTTP {status} {error.get('code')}: {error.get('message')}"
    if status == 401:
        reason += " (get a new token: `bridge mcp config ...` or `bridge token issue ...`)"
    return reason


@dataclass
class Forwarder:
    """Sends JSON-RPC messages to `<url>/mcp` and turns the answers (or their absence) into replies."""

    url: str
    token: Callable[[], str]
    timeout: float = TIMEOUT
    negotiated: str | None = None  # the protocolVersion of the last initialize result

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/mcp"

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """POST one body; (status, content type, body). Raises OSError or HTTPException."""
        parts = urlsplit(self.endpoint)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout)
        try:
            connection.request("POST", parts.path, body, headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type") or "", response.read()
        finally:
            connection.close()

    def exchange(self, message: dict[str, Any]) -> list[Any]:
        """POST one message; the JSON-RPC messages the bridge answered with (none for 202). Raises BridgeUnavailable."""
        try:
            headers = {"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json",
                       "Accept": "application/json, text/event-stream",
                       **routing_headers(message, self.negotiated)}
        except OSError as exc:
            raise BridgeUnavailable(f"cannot read the token: {exc}") from exc
        try:
            status, content_type, body = self.post(json.dumps(message).encode(), headers)
        except (OSError, http.client.HTTPException) as exc:
            raise BridgeUnavailable(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) from exc
        if not body.strip():
            if 200 <= status < 300:
                return []
            raise BridgeUnavailable(f"HTTP {status} with an empty body")
        try:
            if content_type.startswith("text/event-stream"):
                return sse_messages(body)
            document = json.loads(body)
        except ValueError as exc:
            raise BridgeUnavailable(f"HTTP {status} {content_type or 'without a content type'}, not JSON") from exc
        if isinstance(document, dict) and document.get("jsonrpc") == "2.0":
            return [document]
        raise BridgeUnavailable(refusal(status, document), refused=True)

    def handle(self, message: Any) -> list[dict[str, Any]]:
        """The lines to write for one message from the client: its reply for a request, nothing otherwise."""
        is_request = isinstance(message, dict) and "id" in message and isinstance(message.get("method"), str)
        if not isinstance(message, dict):
            return [rpc_error(None, INVALID_REQUEST, "expected one JSON-RPC 2.0 message object")]
        try:
            replies = self.exchange(message)
        except BridgeUnavailable as exc:
            text = f"bridge at {self.url} refused the request: {exc}" if exc.refused else \
                f"bridge unavailable at {self.url}: {exc}"
            log.warning("%s (%s)", text, message.get("method"))
            return [failure(message, text)] if is_request else []
        if not is_request:
            return []  # a notification or a response: the client expects no answer
        if message["method"] == "initialize":
            self.remember_version(replies)
        if not any(isinstance(r, dict) and ("result" in r or "error" in r) for r in replies):
            replies.append(failure(message, f"bridge at {self.url} answered the request without a reply"))
        return [r for r in replies if isinstance(r, dict)]

    def remember_version(self, replies: list[Any]) -> None:
        """Keep the negotiated protocol version of an initialize result for the headers of later messages."""
        for reply in replies:
            result = reply.get("result") if isinstance(reply, dict) else None
            if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                self.negotiated = result["protocolVersion"]


def failure(message: dict[str, Any], text: str) -> dict[str, Any]:
    """The reply to a request the bridge did not answer: a tool error for `tools/call`, else a JSON-RPC error."""
    if message.get("method") == "tools/call":
        return {"jsonrpc": "2.0", "id": message["id"],
                "result": {"content": [{"type": "text", "text": text}], "isError": True}}
    return rpc_error(message["id"], INTERNAL_ERROR, text)


def rpc_error(rpc_id: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error reply."""
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


def token_reader(token_file: Path | None, token_env: str) -> Callable[[], str]:
    """Where the token comes from: the file, read again for every message (a renewed token needs no restart), or
    the environment variable."""
    if token_file is not None:
        return lambda: token_file.read_text(encoding="utf-8").strip()
    value = os.environ.get(token_env, "").strip()
    return lambda: value


def replies_for(forwarder: Forwarder, line: bytes) -> list[dict[str, Any]]:
    """The replies to one input line; a line that is not JSON gets a parse error, a bug an internal error."""
    try:
        message = json.loads(line)
    except ValueError:
        return [rpc_error(None, PARSE_ERROR, "not a JSON message")]
    try:
        return forwarder.handle(message)
    except Exception as exc:  # never let one message end the session
        log.exception("forwarding failed")
        rpc_id = message.get("id") if isinstance(message, dict) else None
        is_request = isinstance(message, dict) and "id" in message and "method" in message
        return [rpc_error(rpc_id, INTERNAL_ERROR, f"bridge mcp failed: {exc}")] if is_request else []


def run(forwarder: Forwarder, lines: Iterable[bytes], out: BinaryIO) -> None:
    """Forward every non-blank line and write each reply as one line of compact JSON."""
    for line in lines:
        if not line.strip():
            continue
        for reply in replies_for(forwarder, line):
            out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            out.flush()


def protocol_stdout() -> BinaryIO:
    """A private handle on the real stdout for protocol messages; fd 1 and `sys.stdout` then point at stderr."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve(url: str, token: Callable[[], str]) -> int:
    """Run the stdio server until EOF on stdin; the exit status."""
    out = protocol_stdout()
    log.info("bridge mcp forwarding stdin to %s/mcp", url.rstrip("/"))
    try:
        run(Forwarder(url, token), iter(sys.stdin.buffer.readline, b""), out)
    except BrokenPipeError:
        return 0  # the client went away
    except KeyboardInterrupt:
        return 130
    log.info("bridge mcp stopped: end of input")
    return 0
