"""A scripted OpenAI Responses API for the real Codex CLI: `POST …/responses` streams what `brain.decide` chooses.

Codex sends the whole conversation on every request (`input`: user messages, its own `function_call`s and their
`function_call_output`s); it is converted to brain `Step`s and answered with one output item, streamed as SSE
(`response.created`, `response.output_item.added`, `response.output_text.delta`, `response.output_item.done`,
`response.completed`). Bridge tools are offered by Codex as a namespace `mcp__bridge`, so a tool call carries
`namespace: "mcp__bridge"` and the bare tool name. Requests that offer no bridge tools (not an agent turn) get a
short text. Every other path is logged and answered harmlessly (`GET /models` → an empty list).

Run alone: `python -m bridge.demo.fake_openai --persona-json '{"agent_id": "executioner", "role": "executioner"}'`
prints the base URL (for a Codex `[model_providers.x] base_url`) on its first line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.demo.brain import Persona, Reply, Step, decide

NAMESPACE = "mcp__bridge"
log = logging.getLogger(__name__)
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    """A process-unique id such as `call_17_1712345678901`."""
    return f"{prefix}_{next(_ids)}_{time.time_ns() // 1_000_000}"


def _text_of(content: Any) -> str:
    """The text of a message's content or a tool output (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _bare_name(item: dict[str, Any]) -> str | None:
    """The bridge tool a `function_call` item calls, or None when it is not a bridge tool."""
    name = str(item.get("name", ""))
    if item.get("namespace") == NAMESPACE:
        return name
    for prefix in (f"{NAMESPACE}__", f"{NAMESPACE}."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def _arguments(raw: Any) -> dict[str, Any]:
    """A function call's arguments (a JSON string on the wire) as a dict."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def to_steps(items: list[Any]) -> list[Step]:
    """Responses API `input` items as brain steps (user texts, bridge tool calls and their results)."""
    steps: list[Step] = []
    bridge_calls: set[str] = set()  # call_ids of bridge calls: outputs of other tools are skipped
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and item.get("role") == "user":
            steps.append(Step("user", _text_of(item.get("content"))))
        elif kind == "function_call" and (name := _bare_name(item)) is not None:
            bridge_calls.add(str(item.get("call_id")))
            steps.append(Step("call", name=name, arguments=_arguments(item.get("arguments"))))
        elif kind == "function_call_output" and str(item.get("call_id")) in bridge_calls:
            steps.append(Step("result", _text_of(item.get("output"))))
    return steps


def offers_bridge_tools(body: dict[str, Any]) -> bool:
    """True when the request offers the bridge's MCP tools: an agent turn, not a title or summary request."""
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and (tool.get("name") == NAMESPACE
                                       or str(tool.get("name", "")).startswith(f"{NAMESPACE}__")):
            return True
    return False


def _sample(schema: Any) -> Any:
    """A small value that satisfies a JSON schema's type (strings are a short title)."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _sample(props.get(k)) for k in schema.get("required") or []}
    return {"integer": 0, "number": 0, "boolean": False, "array": []}.get(str(kind), "Handle bridge trigger")


def side_text(body: dict[str, Any]) -> str:
    """The answer to a request that is not an agent turn (e.g. Codex's thread title, a JSON schema output)."""
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema":
        return json.dumps(_sample(text_format.get("schema")))
    return "Bridge agent."


def reply_item(reply: Reply) -> dict[str, Any]:
    """The output item for the brain's reply: a namespaced `function_call`, or an assistant message."""
    if reply.tool:
        return {"type": "function_call", "id": _new_id("fc"), "call_id": _new_id("call"), "namespace": NAMESPACE,
                "name": reply.tool, "arguments": json.dumps(reply.arguments), "status": "completed"}
    return {"type": "message", "id": _new_id("msg"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}]}


def sse_events(item: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """The event stream of one response holding one output item."""
    response_id = _new_id("resp")
    started = {"type": "response.created",
               "response": {"id": response_id, "object": "response", "status": "in_progress", "model": model}}
    events: list[dict[str, Any]] = [started]
    if item["type"] == "message":
        text = item["content"][0]["text"]
        empty = {**item, "status": "in_progress", "content": []}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": empty})
        events.append({"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                       "content_index": 0, "delta": text})
    else:
        events.append({"type": "response.output_item.added", "output_index": 0,
                       "item": {**item, "status": "in_progress", "arguments": ""}})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 120}
    events.append({"type": "response.completed", "response": {"id": response_id, "object": "response",
                                                              "status": "completed", "model": model,
                                                              "output": [item], "usage": usage}})
    return events


class FakeOpenAI:
    """The scripted Responses API for one persona, on 127.0.0.1 (port 0 picks a free port)."""

    def __init__(self, persona: Persona, log_path: Path | None = None, port: int = 0) -> None:
        self.persona = persona
        self.log_path = log_path
        self.requests: list[dict[str, Any]] = []  # every request seen (time, method, path, answer), for diagnostics
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL for Codex's provider `base_url` (requests go to `<url>/responses`)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the command line)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The output item for one `/responses` request body."""
        if not offers_bridge_tools(body):
            return reply_item(Reply(text=side_text(body)))
        reply = decide(self.persona, to_steps(body.get("input") or []))
        if reply.tool:
            self._log_call(reply)
        return reply_item(reply)

    def record(self, method: str, path: str, note: str) -> None:
        """Remember one request (unknown paths are also logged)."""
        with self._lock:
            self.requests.append({"t": time.time(), "method": method, "path": path, "note": note})

    def _log_call(self, reply: Reply) -> None:
        if self.log_path is None:
            return
        line = json.dumps({"t": time.time(), "agent_id": self.persona.agent_id, "tool": reply.tool,
                           "arguments": reply.arguments})
        with self._lock, self.log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    """`POST …/responses` streams the brain's answer; `GET …/models` is an empty list; the rest is 404."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake-openai: " + format, *args)

    def do_GET(self) -> None:
        self.server.fake.record("GET", self.path, "")
        if self.path.split("?", 1)[0].endswith("/models"):
            self._json(200, {"object": "list", "data": [], "models": []})
        else:
            self._not_found()

    def do_POST(self) -> None:
        body = self._body()
        if not self.path.split("?", 1)[0].endswith("/responses"):
            self.server.fake.record("POST", self.path, "unknown")
            self._not_found()
            return
        item = self.server.fake.answer(body)
        self.server.fake.record("POST", self.path, str(item.get("name") or "message"))
        self._stream(sse_events(item, str(body.get("model", "fake"))))

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            value = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        log.info("fake-openai: unknown %s %s", self.command, self.path)
        self._json(404, {"error": {"message": f"no such path {self.path}", "type": "not_found"}})

    def _stream(self, events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    """Serve one persona in the foreground; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(prog="python -m bridge.demo.fake_openai", description=__doc__.splitlines()[0])
    parser.add_argument("--persona-json", required=True, help="the Persona as JSON (see brain.Persona.from_json)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--log", type=Path, default=None, help="append every tool call as a JSON line here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # unknown paths on stderr
    fake = FakeOpenAI(Persona.from_json(json.loads(args.persona_json)), log_path=args.log, port=args.port)
    print(fake.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
