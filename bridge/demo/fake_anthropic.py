"""A scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI runs a bridge persona offline.

Every `POST /v1/messages` replays the conversation: its `messages` become brain `Step`s, `brain.decide` picks the
next move, and the answer is a `mcp__bridge__<tool>` tool_use or a text block (SSE when `stream` is true, JSON
otherwise). Requests that offer no tools (titles, summaries, quota probes) get a short text. Each emitted tool call
is appended to `log_path` as one JSON line; other paths are recorded in `unknown` and answered with `{}`.

    python -m bridge.demo.fake_anthropic --persona-json '{"agent_id": "r", "role": "echo"}' [--port N] [--log F]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bridge.demo import brain
from bridge.demo.brain import Persona, Reply, Step

TOOL_PREFIX = "mcp__bridge__"
NO_TOOLS_TEXT = "Bridge agent session"
SEARCH_TOOL = "ToolSearch"  # Claude Code's loader for deferred tools
USED = ("read_messages", "post_message", "ack_read")  # the bridge tools the brain calls


def block_text(content: Any) -> str:
    """The text of a content value: a string, or a list of blocks whose text blocks are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def to_steps(messages: list[dict[str, Any]]) -> list[Step]:
    """Brain steps from Anthropic messages: user texts, bridge tool calls and their results (`system` entries,
    thinking blocks, and other tools' calls such as ToolSearch with their results are left out)."""
    steps: list[Step] = []
    other_calls: set[str] = set()
    for message in messages:
        role = message.get("role")
        for block in _blocks(message.get("content")):
            kind = block.get("type")
            if role == "user" and kind == "text":
                steps.append(Step("user", block.get("text", "")))
            elif role == "user" and kind == "tool_result" and block.get("tool_use_id") not in other_calls:
                steps.append(Step("result", block_text(block.get("content"))))
            elif role == "assistant" and kind == "tool_use":
                name = str(block.get("name", ""))
                if not name.startswith(TOOL_PREFIX):
                    other_calls.add(str(block.get("id")))
                    continue
                steps.append(Step("call", name=name.removeprefix(TOOL_PREFIX), arguments=block.get("input") or {}))
    return steps


def last_call_name(messages: list[dict[str, Any]]) -> str | None:
    """The name of the latest tool_use in the conversation."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            names = [b.get("name") for b in _blocks(message.get("content")) if b.get("type") == "tool_use"]
            return str(names[-1]) if names else None
    return None


def offered_tools(request: dict[str, Any]) -> set[str]:
    """Names of the tools a request offers."""
    return {str(t.get("name")) for t in request.get("tools") or [] if isinstance(t, dict)}


def content_blocks(reply: Reply) -> tuple[list[dict[str, Any]], str]:
    """The assistant content for a reply whose `tool` is a wire name, and its stop reason."""
    if reply.tool is None:
        return [{"type": "text", "text": reply.text}], "end_turn"
    block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex}", "name": reply.tool, "input": reply.arguments}
    return [block], "tool_use"


def _usage(output_tokens: int) -> dict[str, int]:
    return {"input_tokens": 10, "output_tokens": output_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}


def message_json(blocks: list[dict[str, Any]], stop_reason: str, model: str) -> dict[str, Any]:
    """A non-streaming Messages API response."""
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": None, "usage": _usage(len(blocks) * 10)}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _block_events(index: int, block: dict[str, Any]) -> list[str]:
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    else:
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    return [_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            _sse("content_block_stop", {"type": "content_block_stop", "index": index})]


def message_sse(blocks: list[dict[str, Any]], stop_reason: str, model: str) -> str:
    """A streaming Messages API response as one SSE body."""
    message = {**message_json([], "", model), "stop_reason": None, "usage": _usage(1)}
    events = [_sse("message_start", {"type": "message_start", "message": message})]
    for index, block in enumerate(blocks):
        events += _block_events(index, block)
    events.append(_sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                         "usage": {"output_tokens": len(blocks) * 10}}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return "".join(events)


class FakeAnthropic:
    """The fake API server for one persona; `start()` it, point `ANTHROPIC_BASE_URL` at `.url`, then `stop()`."""

    def __init__(self, persona: Persona, log_path: Path | None = None, port: int = 0) -> None:
        self.persona = persona
        self.log_path = log_path
        self.port = port
        self.unknown: list[str] = []  # "METHOD /path" of requests it does not implement
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL (no trailing slash), valid after start()."""
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeAnthropic:
        """Listen on 127.0.0.1 and serve in a daemon thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, method: str, path: str, known: bool) -> None:
        """Remember a request line (unknown ones also go to stderr)."""
        with self._lock:
            self.requests.append(f"{method} {path}")
            if not known:
                self.unknown.append(f"{method} {path}")
                print(f"fake_anthropic: unknown {method} {path}", file=sys.stderr, flush=True)

    def reply_for(self, request: dict[str, Any]) -> Reply:
        """The next move for a Messages request, its `tool` the wire name (a short text when no tools are offered).

        Claude Code may defer MCP tools behind ToolSearch (their names listed, schemas not sent): then the move is
        one `ToolSearch` "select:" call for the bridge tools, and the brain's move once they are offered.
        """
        tools = offered_tools(request)
        if not tools:
            return Reply(text=NO_TOOLS_TEXT)
        messages = request.get("messages") or []
        reply = brain.decide(self.persona, to_steps(messages))
        if reply.tool is None:
            return reply
        name = TOOL_PREFIX + reply.tool
        if name in tools:
            return Reply(tool=name, arguments=reply.arguments)
        if SEARCH_TOOL in tools and last_call_name(messages) != SEARCH_TOOL:
            return Reply(tool=SEARCH_TOOL, arguments={"query": "select:" + ",".join(TOOL_PREFIX + t for t in USED)})
        return Reply(text=f"The bridge tool {reply.tool} is not available in this session.")

    def log_call(self, reply: Reply) -> None:
        """Append an emitted bridge tool call to the log file."""
        if self.log_path is None or reply.tool is None or not reply.tool.startswith(TOOL_PREFIX):
            return
        line = json.dumps({"t": time.time(), "agent_id": self.persona.agent_id,
                           "tool": reply.tool.removeprefix(TOOL_PREFIX), "arguments": reply.arguments})
        with self._lock, self.log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def _handler_for(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_fake = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeAnthropic

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _send(self, body: str, content_type: str = "application/json", status: int = 200) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._body()
        if path == "/v1/messages":
            self.server_fake.record("POST", self.path, True)
            self._messages(body)
        elif path == "/v1/messages/count_tokens":
            self.server_fake.record("POST", self.path, True)
            self._send(json.dumps({"input_tokens": max(1, len(json.dumps(body)) // 4)}))
        else:
            self.server_fake.record("POST", self.path, False)
            self._send("{}")

    def do_GET(self) -> None:
        self.server_fake.record(self.command, self.path, False)
        self._send("{}")

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_GET

    def _messages(self, body: dict[str, Any]) -> None:
        fake = self.server_fake
        try:
            reply = fake.reply_for(body)
        except Exception as exc:  # a brain bug must not make the CLI retry forever
            traceback.print_exc()
            reply = Reply(text=f"fake model error: {exc}")
        blocks, stop_reason = content_blocks(reply)
        model = str(body.get("model") or "claude-fake")
        fake.log_call(reply)
        if body.get("stream"):
            self._send(message_sse(blocks, stop_reason, model), "text/event-stream")
        else:
            self._send(json.dumps(message_json(blocks, stop_reason, model)))


def main(argv: list[str] | None = None) -> None:
    """Run a fake API in the foreground; its URL is the first line of output."""
    parser = argparse.ArgumentParser(prog="python -m bridge.demo.fake_anthropic", description=__doc__.splitlines()[0])
    parser.add_argument("--persona-json", required=True, help="persona as JSON (Persona.from_json)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, default=None, help="append emitted tool calls here (JSON lines)")
    args = parser.parse_args(argv)
    fake = FakeAnthropic(Persona.from_json(json.loads(args.persona_json)), args.log, args.port).start()
    print(fake.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
