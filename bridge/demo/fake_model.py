"""What the scripted fake model APIs (`fake_anthropic`, `fake_openai`) share: an HTTP server on 127.0.0.1 playing one
brain persona, the record of requests, the JSON-lines log of emitted tool calls, and the command line.

A subclass only converts its wire format: `route` turns a request into an `Answer` (None for a path it does not
serve, which is recorded in `unknown`, reported on stderr and answered by `unknown_answer`). Each emitted bridge
tool call is appended to `log_path` as `{"t", "agent_id", "tool", "arguments"}` with the bare tool name.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self

from bridge.demo.brain import Persona


@dataclass(frozen=True)
class Answer:
    """One HTTP response."""

    body: bytes
    content_type: str = "application/json"
    status: int = 200


def json_answer(value: Any, status: int = 200) -> Answer:
    """A JSON response."""
    return Answer(json.dumps(value).encode(), "application/json", status)


def sse_answer(events: list[dict[str, Any]]) -> Answer:
    """A whole server-sent-event stream in one body; each event is named by its `type`."""
    text = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
    return Answer(text.encode(), "text/event-stream")


class FakeModel:
    """A fake API for one persona: `start()` it, point the CLI at `.url`, then `stop()` (or use `with`)."""

    name: ClassVar[str] = "fake_model"  # for the thread and stderr
    base_path: ClassVar[str] = ""  # appended to the URL, e.g. "/v1"

    def __init__(self, persona: Persona, log_path: Path | None = None, port: int = 0) -> None:
        self.persona = persona
        self.log_path = log_path
        self.port = port
        self.unknown: list[str] = []  # "METHOD /path" of requests it does not implement
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        """Base URL for the CLI (no trailing slash), valid after start()."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"

    def start(self) -> Self:
        """Listen on 127.0.0.1 (port 0 picks a free one) and serve in a daemon thread."""
        self._server = _Server(self, self.port)
        poll = 0.05  # seconds; stop() waits for the next poll
        threading.Thread(target=self._server.serve_forever, args=(poll,), name=self.name, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, method: str, path: str, body: dict[str, Any]) -> Answer | None:
        """The answer to a request (`path` without query or trailing slash), None for an unknown path."""
        raise NotImplementedError

    def unknown_answer(self, path: str) -> Answer:
        """The answer to a request for an unknown path."""
        return json_answer({})

    def handle(self, method: str, path: str, body: dict[str, Any]) -> Answer:
        """Route one request and record it."""
        answer = self.route(method, path.split("?", 1)[0].rstrip("/"), body)
        self.record(method, path, answer is not None)
        return self.unknown_answer(path) if answer is None else answer

    def record(self, method: str, path: str, known: bool) -> None:
        """Remember a request line (unknown ones also go to stderr)."""
        with self._lock:
            self.requests.append(f"{method} {path}")
            if not known:
                self.unknown.append(f"{method} {path}")
                print(f"{self.name}: unknown {method} {path}", file=sys.stderr, flush=True)

    def log_call(self, tool: str, arguments: dict[str, Any]) -> None:
        """Append an emitted bridge tool call (bare name) to the log file."""
        if self.log_path is None:
            return
        line = json.dumps({"t": time.time(), "agent_id": self.persona.agent_id, "tool": tool, "arguments": arguments})
        with self._lock, self.log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeModel, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    """Every method goes to the fake's `handle`; bodies are JSON objects, answers carry a Content-Length."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(length) if length else b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _answer(self) -> None:
        answer = self.server.fake.handle(self.command, self.path, self._body())
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _answer


def serve_main(cls: type[FakeModel], argv: list[str] | None = None) -> None:
    """Run a fake API in the foreground until interrupted; its URL is the first line of output."""
    module = sys.modules[cls.__module__]
    prog = f"python -m {module.__spec__.name if module.__spec__ else cls.__module__}"
    parser = argparse.ArgumentParser(prog=prog, description=(module.__doc__ or "").partition("\n")[0])
    parser.add_argument("--persona-json", required=True, help="the persona as JSON (see brain.Persona.from_json)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--log", type=Path, default=None, help="append every emitted tool call here (JSON lines)")
    args = parser.parse_args(argv)
    persona = Persona.from_json(json.loads(args.persona_json))
    with cls(persona, args.log, args.port) as fake, suppress(KeyboardInterrupt):
        print(fake.url, flush=True)
        threading.Event().wait()
