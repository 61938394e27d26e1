"""Hostile input: generated malformed requests against a real `bridge serve`, judged from the client side.

Two generators aim at the same server (a real `bridge serve` on 127.0.0.1 with its default limits):

- hypothesis, driven programmatically with a fixed seed: at least `scale.malformed_bodies` requests, each one step
  away from a valid call of every `/v1/mcp/<command>` route and of `POST /mcp` (JSON-RPC `tools/call` and the
  protocol methods): a field of the wrong type, an integer at or beyond 2**63 or negative, deep nesting, NUL and
  control characters, lone surrogates, unknown fields, duplicate keys, non-JSON bytes, a wrong content type, an
  oversize body, a top-level value that is not an object.
- schemathesis against `/v1/openapi.json`: positive and negative examples of every operation (a bounded number
  each), checked with its own `not_a_server_error` and `response_schema_conformance` checks.

Every answer is judged here: a 5xx, an answer outside its shape (the error envelope for a `/v1` refusal and for
HTTP-level refusals of `/mcp`; JSON-RPC 2.0 or an empty 202 for `/mcp`), or no answer at all, counts against the
server. The server's resident memory is read from /proc before (after a warm-up) and after, and the server must
still answer `/health` and serve a real post and read at the end.

The server (`serve`, on the reliability stack), the careful raw client (`Wire`) and the judges of an answer's
shape (`envelope_problem`, `answer_problem`) are shared with the `attacks` and `abuse` scenarios.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.stack import reliability_stack

from bridge.testing.client import Client, new_thread, post
from bridge.testing.processes import Proc
from bridge.testing.stack import Stack

if TYPE_CHECKING:
    from bridge.auth.keys import SigningKey
    from bridge.settings import Settings

AREA = "hostile input"
SEED = 20261201
RSS_BOUND_MIB = 50.0
"""Allowed growth of the server's resident memory over the whole run. In flight at once there are at most
`threads` bodies of at most BRIDGE_MAX_BODY (32 x 256 KiB = 8 MiB) plus the interpreter's own warm-up; 50 MiB
leaves room for that and for allocator fragmentation, while a leak of a few KiB per hostile request over 10,000
requests would exceed it."""
WARMUP_SHARE = 0.05  # the first 5% of requests warm the server up (lazy imports, caches) before RSS is read
REQUEST_TIMEOUT = 15.0
MAX_OVERSIZE = 1 << 20  # the largest oversize body sent
SLICE = 16 * 1024  # a request the server may refuse early is sent in slices of this size (Wire.send_carefully)
LONG_POLL_MS = 200  # valid wait_ms values schemathesis generates are cut to this: 30 s waits would only cost time
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ENVELOPE_KEYS = {"error", "request_id", "occurred_at"}
MCP_PATH = "/mcp"


# --------------------------------------------------------------------------------------------------- the server
@dataclass
class Server:
    """One `bridge serve --no-worker` (`proc`) on a reliability `stack` (tokens, clients, queries, CLI runs), with
    what the scenarios of this module and of `attacks` and `abuse` need: its settings (as the server loaded them)
    and its signing key."""

    stack: Stack
    proc: Proc
    settings: Settings

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def key(self) -> SigningKey:
        return self.stack.minter.key


@contextlib.contextmanager
def serve(workdir: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A real `bridge serve` (no worker: nothing here needs wakes) on 127.0.0.1; stopped by PID on exit."""
    from bridge.settings import Settings

    with reliability_stack(workdir, env) as stack:
        proc = stack.serve("server")
        yield Server(stack, proc, Settings.load({"db": str(stack.db)}, env=dict(stack.settings_env)))


# --------------------------------------------------------------------------------------------------- judging
@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the client saw it (`headers` keyed by lower-case name)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def envelope_problem(answer: Answer) -> str | None:
    """Why `answer` is not the documented error envelope (None when it is)."""
    from bridge.errors import ERROR_CLASSES

    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"content type {answer.headers.get('content-type')!r}"
    try:
        body = answer.json()
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict) or set(body) != ENVELOPE_KEYS:
        return f"keys {sorted(body) if isinstance(body, dict) else type(body).__name__}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
        return "error object"
    if error["code"] not in {cls.code for cls in ERROR_CLASSES}:
        return f"unknown code {error['code']!r}"
    if not isinstance(error["message"], str) or not error["message"] or not isinstance(error["details"], dict):
        return "message/details"
    if not isinstance(body["occurred_at"], str) or not ISO_MS.match(body["occurred_at"]):
        return "occurred_at"
    if answer.headers.get("x-request-id") != body["request_id"]:
        return "x-request-id differs from request_id"
    return None


def jsonrpc_problem(answer: Answer) -> str | None:
    """Why an answer of `POST /mcp` is neither an empty 202, a JSON-RPC 2.0 reply nor the error envelope."""
    if answer.status == 202:
        return None if not answer.body else "202 with a body"
    try:
        body = answer.json()
    except ValueError:
        return "body is not JSON"
    if isinstance(body, dict) and set(body) == ENVELOPE_KEYS:
        return envelope_problem(answer)
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or ("result" in body) == ("error" in body):
        return "not a JSON-RPC 2.0 reply"
    if "error" in body and not (isinstance(body["error"], dict) and isinstance(body["error"].get("code"), int)
                                and isinstance(body["error"].get("message"), str)):
        return "JSON-RPC error object"
    return None


def answer_problem(path: str, answer: Answer) -> str | None:
    """The shape rule of the route: `/mcp` speaks JSON-RPC; everything else answers 200 JSON or the envelope."""
    if path == MCP_PATH:
        return jsonrpc_problem(answer)
    if answer.status == 200:
        try:
            return None if isinstance(answer.json(), dict) else "200 without a JSON object"
        except ValueError:
            return "200 without JSON"
    return envelope_problem(answer)


class Wire(Client):
    """The harness's keep-alive client sending exactly the bytes and headers given, answered as an `Answer`."""

    def __init__(self, port: int, timeout: float = REQUEST_TIMEOUT):
        super().__init__(port, timeout=timeout)

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        """Send one request; OSError/HTTPException propagate (the connection is reset for the next call)."""
        return Answer(*self.raw(method, path, body, headers))

    def send_carefully(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """Send a request the server may refuse before reading it all (a body or headers over the limit) as a
        careful client does: on its own connection, in slices, stopping as soon as the server has answered. The
        server answers and closes; a client blindly writing on gets a reset instead of the 4xx."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}",
                "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            for offset in range(0, len(data), SLICE):
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is already there
                try:
                    sock.sendall(data[offset:offset + SLICE])
                except (BrokenPipeError, ConnectionResetError):
                    break
            reply = http.client.HTTPResponse(sock)
            try:
                reply.begin()
                return Answer(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
            finally:
                reply.close()


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def healthy(server: Server, coordinator: str, thread_id: str) -> tuple[bool, str]:
    """`/health` answers ok and a real post is read back: the server still does its job."""
    with server.stack.client(coordinator, timeout=10) as client:
        health = client.get("/health")
        if not health.ok or not isinstance(health.body, dict) or health.body.get("status") != "ok":
            return False, f"/health -> {health.status} {health.error or ''}"
        try:
            posted = post(client, thread_id, "still alive", idempotency_key=f"alive-{time.time()}")
            read = client.ok("read_messages", {"thread_id": thread_id, "since_seq": posted["seq"] - 1})
        except RuntimeError as exc:
            return False, str(exc)
        if [m["message_id"] for m in read["messages"]] != [posted["message_id"]]:
            return False, "the post was not read back"
        return True, f"/health ok, post seq {posted['seq']} read back"


# --------------------------------------------------------------------------------------------------- the ledger
@dataclass
class Ledger:
    """Client-side record of every hostile request and what came back."""

    sent: int = 0
    server_errors: int = 0
    misshapen: int = 0
    unanswered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def record(self, label: str, path: str, outcome: Answer | Exception) -> None:
        self.sent += 1
        self.kinds[label] += 1
        if isinstance(outcome, Exception):
            self.unanswered += 1
            self.note(f"{label} {path}: no answer ({type(outcome).__name__}: {outcome})")
            return
        self.statuses[outcome.status] += 1
        if outcome.status >= 500:
            self.server_errors += 1
            self.note(f"{label} {path}: {outcome.status} {outcome.body[:200]!r}")
        problem = answer_problem(path, outcome)
        if problem is not None:
            self.misshapen += 1
            self.note(f"{label} {path}: {outcome.status} {problem}")

    def note(self, text: str) -> None:
        """Keep the first few examples of what went wrong."""
        if len(self.examples) < 5:
            self.examples.append(text)


# --------------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Hostile:
    """One generated request."""

    label: str  # which kind of hostility, for the ledger
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Target:
    """What the valid bases refer to: real ids and tokens of the running server."""

    thread_id: str
    closed_thread_id: str
    session_id: str
    coordinator: str


def valid_bases(target: Target) -> dict[str, dict[str, Any]]:
    """A valid argument object per command; each hostile body is one step away from one of these."""
    thread = target.thread_id
    return {
        "create_thread": {"title": "hostile", "type": "workflow", "participants": ["rev"]},
        "get_thread": {"thread_id": thread},
        "list_threads": {"limit": 5},
        "update_participants": {"thread_id": thread, "add": ["rev"]},
        "update_thread_status": {"thread_id": thread, "status": "active", "reason": "hostile"},
        "summarize_thread": {"thread_id": thread, "max_messages": 5},
        "post_message": {"thread_id": thread, "schema_version": 1, "kind": "chat", "body": "hostile"},
        "read_messages": {"thread_id": thread, "since_seq": 0, "limit": 5},
        "ack_read": {"thread_id": thread, "last_read_seq": 0},
        "inbox": {"limit": 5},
        "heartbeat_session": {"session_id": target.session_id, "runtime": "hostile", "status": "idle",
                              "resumable": False},
        # a closed thread: a valid trigger is refused instead of making the worker spawn an agent
        "trigger_participant": {"thread_id": target.closed_thread_id, "target_agent_id": "rev", "reason": "hostile"},
    }


CONTENT_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json-patch+json", "application/jsonx", "json", "", "application/xml",
                 "application/json; charset=utf-16", "*/*")
RAW_TEXTS = (
    "", " ", "\n", "null", "true", "0", "-0", "1e999", "-1e999", "NaN", "Infinity", "[]", "\"text\"", "{}{}", "{} x",
    "{", "}", "{\"a\"}", "{\"a\":}", "{'a': 1}", "{\"a\":1,}", "[1,]", "\ufeff{}", "{\"a\":\"\\ud800\"}",
    "{\"a\":\"\\udfff\\ud800\"}", "{\"\\ud800\":1}", "{\"a\":\"\\u0000\"}", "{\"a\":01}", "{\"a\":.5}", "{\"a\":1.}",
    "{\"a\":+1}", "{\"a\":0x10}", "{\"a\":\"\t\"}", "{\"a\":\"\n\"}", "/* c */{}", "{\"a\":1}// c",
)
MCP_METHODS = ("initialize", "ping", "tools/list", "tools/call", "server/discover", "notifications/initialized",
               "resources/list", "prompts/get", "logging/setLevel", "completion/complete", "rpc.discover", "",
               "tools/call/x", "../tools/call")
MCP_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28", "2024-11-05", "2099-01-01", "garbage", "",
                "2025-06-18, 2025-11-25")


def _strategies(target: Target, max_body: int) -> Any:
    """The hypothesis strategy of one hostile request (`Hostile`)."""
    from hypothesis import strategies as st

    from bridge.services.commands import COMMANDS

    bases = valid_bases(target)
    commands = sorted(COMMANDS)
    huge = st.one_of(st.integers(min_value=2**63 - 1, max_value=2**200), st.integers(min_value=-(2**200), max_value=-1),
                     st.sampled_from([2**63, 2**64, -(2**63) - 1, 2**31, -1, 0]))
    text = st.one_of(st.text(max_size=30), st.text(st.characters(max_codepoint=0x1F), max_size=10),
                     st.text(max_size=10).map(lambda s: s + "\x00" + s), st.sampled_from(["", "\x00", "\u2028",
                                                                                          "../../etc/passwd", "%00"]))
    scalar = st.one_of(huge, text, st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True))
    value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(text, inner, max_size=4)), max_leaves=12)

    @st.composite
    def arguments(draw: Any, command: str) -> tuple[str, str]:
        """(label, JSON text) of a command's arguments one step from valid."""
        base = dict(bases[command])
        kind = draw(st.sampled_from(("wrong_type", "huge_int", "unknown_field", "missing_field", "duplicate_key",
                                     "deep_nesting", "nul", "long_string", "raw_text", "top_level")))
        keys = sorted(base) or ["thread_id"]
        key = draw(st.sampled_from(keys))
        if kind == "wrong_type":
            base[key] = draw(value)
        elif kind == "huge_int":
            base[draw(st.sampled_from([*keys, "limit", "since_seq", "last_read_seq", "wait_ms", "schema_version",
                                       "max_messages"]))] = draw(huge)
        elif kind == "unknown_field":
            base[draw(text.filter(lambda k: k not in base))] = draw(value)
        elif kind == "missing_field":
            base.pop(key, None)
        elif kind == "duplicate_key":
            other = json.dumps(draw(value), allow_nan=True)
            return kind, json.dumps(base, allow_nan=True)[:-1] + (", " if base else "") + f'"{key}": {other}}}'
        elif kind == "deep_nesting":
            depth = draw(st.sampled_from([31, 32, 33, 64, 1000, 10_000, 100_000]))
            opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
            nested = opener * depth + "1" + closer * depth
            return kind, json.dumps(base)[:-1] + (", " if base else "") + f'"{key}": {nested}}}'
        elif kind == "nul":
            base[key] = draw(st.sampled_from(["\x00", "a\x00b", "\x00" * 100]))
        elif kind == "long_string":
            base[key] = "x" * draw(st.sampled_from([129, 201, 501, 8193, 65_537, 200_000]))
        elif kind == "raw_text":
            return kind, draw(st.sampled_from(RAW_TEXTS))
        else:
            return kind, json.dumps(draw(st.one_of(scalar, st.lists(scalar, max_size=3))), allow_nan=True)
        return kind, json.dumps(base, allow_nan=True)

    def encode(draw: Any, label: str, path: str, text_body: str, extra: dict[str, str] | None = None) -> Hostile:
        """Encode a body and pick the headers, sometimes wrongly: content type, encoding, bytes, size."""
        headers = {"Authorization": f"Bearer {target.coordinator}", "Content-Type": "application/json", **(extra or {})}
        body = text_body.encode("utf-8", "surrogatepass")
        twist = draw(st.sampled_from(("none",) * 6 + ("content_type", "no_content_type", "bytes", "utf16",
                                                       "oversize", "truncated")))
        if twist == "content_type":
            headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES))
        elif twist == "no_content_type":
            del headers["Content-Type"]
        elif twist == "bytes":
            body = draw(st.binary(max_size=64)) + body[: draw(st.integers(0, 64))] + draw(st.binary(max_size=8))
        elif twist == "utf16":
            body = text_body.encode("utf-16", "surrogatepass")
        elif twist == "oversize":
            size = draw(st.sampled_from([max_body + 1, max_body + 1000, 2 * max_body, MAX_OVERSIZE]))
            body = (b'{"body":"' + b"x" * size)[:size] + b'"}'
        elif twist == "truncated" and body:
            body = body[: draw(st.integers(0, len(body) - 1))]
        return Hostile(f"{label}+{twist}" if twist != "none" else label, path, body, headers)

    @st.composite
    def v1_request(draw: Any) -> Hostile:
        command = draw(st.sampled_from([*commands, *commands, "unknown_command", "freeze", "../health"]))
        label, text_body = draw(arguments(command if command in bases else "get_thread"))
        return encode(draw, f"v1:{label}", f"/v1/mcp/{command}", text_body)

    @st.composite
    def mcp_request(draw: Any) -> Hostile:
        kind = draw(st.sampled_from(("tool_arguments", "envelope", "batch", "params")))
        headers: dict[str, str] = {}
        if draw(st.booleans()):
            headers["MCP-Protocol-Version"] = draw(st.sampled_from(MCP_VERSIONS))
        if kind == "tool_arguments":
            command = draw(st.sampled_from(commands))
            label, args = draw(arguments(command))
            name = json.dumps(draw(st.one_of(st.just(command), text, scalar)), allow_nan=True)
            params = f'{{"name":{name},"arguments":{args}}}'
            text_body = f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}'
            return encode(draw, f"mcp:{label}", MCP_PATH, text_body, headers)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": draw(st.sampled_from(MCP_METHODS)),
                                   "params": {}}
        if kind == "envelope":
            message[draw(st.sampled_from(["jsonrpc", "id", "method", "params"]))] = draw(value)
            if draw(st.booleans()):
                message.pop(draw(st.sampled_from(["jsonrpc", "id", "method", "params"])))
        elif kind == "params":
            message["params"] = {"protocolVersion": draw(st.one_of(st.sampled_from(MCP_VERSIONS), scalar)),
                                 "_meta": draw(st.one_of(value, st.just({"io.modelcontextprotocol/protocolVersion":
                                                                         "2026-07-28"}))),
                                 draw(text): draw(value)}
        else:
            message = draw(st.lists(st.just(message), min_size=0, max_size=3))  # type: ignore[assignment]
        return encode(draw, f"mcp:{kind}", MCP_PATH, json.dumps(message, allow_nan=True), headers)

    return st.one_of(v1_request(), v1_request(), mcp_request())


def drive(strategy: Any, count: int, seed: int, consume: Callable[[Any], None]) -> int:
    """Feed at least `count` examples of `strategy` to `consume` (hypothesis, generate phase only, fixed seeds)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    consumed = [0]

    def take(example: Any) -> None:
        consumed[0] += 1
        consume(example)

    round_ = 0
    while consumed[0] < count:
        wanted = count - consumed[0]

        @fixed_seed(seed + round_)
        @settings(max_examples=wanted, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(strategy)
        def run_round(example: Any) -> None:
            take(example)

        run_round()
        round_ += 1
    return consumed[0]


# --------------------------------------------------------------------------------------------------- schemathesis
@dataclass
class SchemaLedger(Ledger):
    """The ledger of the schemathesis calls, with the failures of its own checks."""

    check_failures: Counter[str] = field(default_factory=Counter)


def run_schemathesis(server: Server, token: str, examples: int, seed: int) -> SchemaLedger:
    """Positive and negative examples of every operation of `/v1/openapi.json`, sent and checked."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import response_schema_conformance

    ledger = SchemaLedger()
    base_url = str(server.proc.url)
    schema = schemathesis.openapi.from_url(f"{base_url}/v1/openapi.json", timeout=10)
    checks = {"not_a_server_error": not_a_server_error, "response_schema_conformance": response_schema_conformance}
    headers = {"Authorization": f"Bearer {token}"}
    with requests.Session() as session:
        for index, result in enumerate(schema.get_all_operations()):
            if not isinstance(result, Ok):
                ledger.check_failures["schema_load"] += 1
                continue
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @fixed_seed(seed + index * 2 + (mode == GenerationMode.NEGATIVE))
                @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck), print_blob=False)
                @given(operation.as_strategy(generation_mode=mode))
                def call(case: Any) -> None:
                    _call_case(case, base_url, session, headers, checks, ledger)

                call()
    return ledger


def _call_case(case: Any, base_url: str, session: Any, headers: dict[str, str], checks: dict[str, Any],
               ledger: SchemaLedger) -> None:
    import requests

    path = case.operation.path
    wait = case.body.get("wait_ms") if isinstance(case.body, dict) else None
    if type(wait) in (int, float) and 0 < wait <= 30_000 and float(wait).is_integer():  # 30000.0 is valid too
        case.body["wait_ms"] = min(int(wait), LONG_POLL_MS)  # a valid long-poll: keep it, but short
    try:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT)
    except requests.RequestException as exc:
        ledger.record("schemathesis", path, exc)
        return
    ledger.record("schemathesis", path, Answer(response.status_code, {
        k.lower(): v[0] if isinstance(v, list) else v for k, v in response.headers.items()}, response.content))
    for name, check in checks.items():
        try:
            case.validate_response(response, checks=[check], headers=headers)
        except Exception as exc:  # schemathesis raises its own failure groups
            ledger.check_failures[name] += 1
            ledger.note(f"{path}: {name}: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}")


# --------------------------------------------------------------------------------------------------- the run
def _prepare(server: Server) -> Target:
    coordinator = server.stack.token("coord", "coordinator")
    with server.stack.client(coordinator) as client:
        thread = new_thread(client, ["rev", "exe"], "hostile target")
        closed = new_thread(client, ["rev"], "closed")
        client.ok("update_thread_status", {"thread_id": closed, "status": "closed", "reason": "target"})
        post(client, thread, "seed")
    return Target(thread_id=thread, closed_thread_id=closed, session_id="coord-s1", coordinator=coordinator)


def schema_examples(scale: Scale) -> int:
    """Examples per operation and generation mode: 10 per unit of scale, at most 100."""
    return min(100, 10 * max(1, scale.n))


def run(scale: Scale, workdir: Path) -> list[Figure]:
    """Send the hostile requests and the schemathesis examples; report what came back."""
    total = scale.malformed_bodies
    with serve(workdir / "hostile") as server:
        target = _prepare(server)
        ledger = Ledger()
        warmup = max(1, int(total * WARMUP_SHARE))
        rss: dict[str, float] = {}
        max_body = server.settings.max_body
        with Wire(server.port) as wire:

            def consume(item: Hostile) -> None:
                try:
                    outcome: Answer | Exception = (
                        wire.send_carefully(item.path, item.body, item.headers) if len(item.body) > max_body
                        else wire.send("POST", item.path, item.body, item.headers))
                except (OSError, http.client.HTTPException) as exc:
                    outcome = exc
                ledger.record(item.label, item.path, outcome)
                if ledger.sent == warmup:
                    rss["before"] = rss_mib(server.proc.pid)

            started = time.monotonic()
            drive(_strategies(target, max_body), total, SEED, consume)
            hypothesis_seconds = time.monotonic() - started
        schema = run_schemathesis(server, target.coordinator, schema_examples(scale), SEED)
        rss["after"] = rss_mib(server.proc.pid)
        alive, alive_note = healthy(server, target.coordinator, target.thread_id)
    return _figures(ledger, schema, rss, alive, alive_note, total, hypothesis_seconds)


def _figures(ledger: Ledger, schema: SchemaLedger, rss: dict[str, float], alive: bool, alive_note: str,
             wanted: int, seconds: float) -> list[Figure]:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(ledger.statuses.items()))
    examples = "; ".join(ledger.examples)
    growth = rss["after"] - rss["before"]
    schema_failures = ", ".join(f"{k}: {v}" for k, v in sorted(schema.check_failures.items())) or "none"
    return [
        Figure(AREA, "generated hostile requests sent (hypothesis)", ledger.sent, wanted, f">= {wanted}",
               ledger.sent >= wanted, note=f"{seconds:.1f} s; statuses {statuses}"),
        Figure(AREA, "5xx answers to hostile requests", ledger.server_errors, ledger.sent, "0",
               ledger.server_errors == 0 and ledger.sent > 0, note=examples),
        Figure(AREA, "answers outside the envelope / JSON-RPC shape", ledger.misshapen, ledger.sent, "0",
               ledger.misshapen == 0 and ledger.sent > 0, note=examples),
        Figure(AREA, "hostile requests without an answer", ledger.unanswered, ledger.sent, "0",
               ledger.unanswered == 0),
        Figure(AREA, "schemathesis: 5xx answers", schema.server_errors, schema.sent, "0",
               schema.server_errors == 0 and schema.sent > 0 and schema.unanswered == 0,
               note=f"no answer: {schema.unanswered}; " + "; ".join(schema.examples)),
        Figure(AREA, "schemathesis: answers outside the envelope", schema.misshapen, schema.sent, "0",
               schema.misshapen == 0 and schema.sent > 0),
        Figure(AREA, "schemathesis: check failures (not_a_server_error, response_schema_conformance)",
               sum(schema.check_failures.values()), schema.sent, "0", not schema.check_failures,
               note=schema_failures),
        Figure(AREA, "server RSS growth over the run", round(growth, 1), None, f"< {RSS_BOUND_MIB:g} MiB",
               growth < RSS_BOUND_MIB, unit="MiB",
               note=f"{rss['before']:.1f} MiB after warm-up -> {rss['after']:.1f} MiB after"),
        Figure(AREA, "server healthy afterwards", int(alive), 1, "1 of 1", alive, note=alive_note),
    ]
