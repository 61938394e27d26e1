"""Bad input over real HTTP (SPEC §2): never a 500, always the JSON envelope with an x-request-id, and nothing is
written. Limits are checked at their exact boundaries, and oversized bodies are refused before parsing."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from envelope import SANE_REQUEST_ID, assert_envelope
from helpers import ThreadTarget, row_counts

KIB = 1024
TABLES = ("threads", "participants", "messages", "read_cursors", "sessions", "escalations")


@dataclass
class World(ThreadTarget):
    """A thread to aim bad requests at, and the row counts that must not change."""

    counts: dict[str, int]

    def count(self) -> dict[str, int]:
        return row_counts(self.parts, TABLES)

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **headers}

    def post(self, command: str, data: bytes, content_type: str | None = "application/json",
             **headers: str) -> dict[str, Any]:
        """requests kwargs for a raw body."""
        if content_type is not None:
            headers["Content-Type"] = content_type
        return {"data": data, "headers": self.auth(**headers)}

    def message(self, **changes: Any) -> dict[str, Any]:
        base = {"thread_id": self.thread_id, "schema_version": 1, "kind": "chat", "body": "hello"}
        merged = {**base, **changes}
        return {k: v for k, v in merged.items() if v is not None}


@pytest.fixture
def world(api, live_server, make_token) -> Iterator[World]:
    token = make_token("coord", "coordinator")
    thread = api.ok("create_thread", token, title="Target", type="workflow", participants=["rev"])
    world = World(api, live_server.parts, token, thread["thread_id"], {})
    world.counts = world.count()
    assert world.counts["threads"] == 1
    yield world
    assert world.count() == world.counts, "a refused request changed the database"


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def nested(depth: int) -> dict[str, Any]:
    """A post_message payload whose JSON nesting (the top-level object counting 1) is exactly `depth`."""
    inner: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 2):  # the top-level object and the innermost one
        inner = {"a": inner}
    return inner


def fields_of(error: dict[str, Any]) -> dict[str, str]:
    return {f["field"]: f["type"] for f in error["details"]["fields"]}


@dataclass
class Case:
    id: str
    build: Callable[[World], dict[str, Any]]  # requests kwargs
    status: int
    code: str
    check: Callable[[dict[str, Any], Any], None] | None = None
    path: str = "/v1/mcp/post_message"
    method: str = "POST"


def reason(expected: str) -> Callable[[dict[str, Any], Any], None]:
    def check(error: dict[str, Any], reply: Any) -> None:
        assert error["details"]["reason"] == expected, error

    return check


def field(name: str, kind: str | None = None) -> Callable[[dict[str, Any], Any], None]:
    def check(error: dict[str, Any], reply: Any) -> None:
        found = fields_of(error)
        assert name in found, found
        if kind is not None:
            assert found[name] == kind, found

    return check


def post(payload: Callable[[World], Any], command: str = "post_message") -> Callable[[World], dict[str, Any]]:
    """A JSON body (a value, or raw bytes) for `command`."""
    def build(w: World) -> dict[str, Any]:
        value = payload(w)
        return w.post(command, value if isinstance(value, bytes) else dumps(value))

    return build


def msg_bytes(w: World, replace: tuple[str, str]) -> bytes:
    """A valid post_message body with one literal text replacement (for raw JSON the encoder cannot produce)."""
    text = json.dumps(w.message())
    assert replace[0] in text
    return text.replace(replace[0], replace[1], 1).encode()


def allow(expected: str) -> Callable[[dict[str, Any], Any], None]:
    def check(error: dict[str, Any], reply: Any) -> None:
        assert expected in [m.strip() for m in reply.headers["Allow"].split(",")], reply.headers

    return check


CASES = [
    # malformed JSON
    Case("malformed_json", post(lambda w: b'{"thread_id": '), 400, "INVALID_ARGUMENT", reason("malformed_json")),
    Case("trailing_garbage", post(lambda w: dumps(w.message()) + b" xyz"), 400, "INVALID_ARGUMENT",
         reason("malformed_json")),
    Case("whitespace_only", post(lambda w: b"   "), 400, "INVALID_ARGUMENT", reason("malformed_json")),
    Case("single_quotes", post(lambda w: b"{'body': 'x'}"), 400, "INVALID_ARGUMENT", reason("malformed_json")),
    Case("unterminated_string", post(lambda w: msg_bytes(w, ('"hello"}', '"hel}'))), 400, "INVALID_ARGUMENT",
         reason("malformed_json")),
    Case("not_utf8_bytes", post(lambda w: dumps(w.message()).replace(b"hello", b"hel\xfflo")), 400,
         "INVALID_ARGUMENT", reason("invalid_utf8")),
    # not an object
    Case("json_array", post(lambda w: [w.message()]), 400, "INVALID_ARGUMENT", field("(body)", "model_type")),
    Case("json_string", post(lambda w: "hello"), 400, "INVALID_ARGUMENT", field("(body)", "model_type")),
    Case("json_null", post(lambda w: None), 400, "INVALID_ARGUMENT", field("(body)", "model_type")),
    Case("json_number", post(lambda w: 42), 400, "INVALID_ARGUMENT", field("(body)", "model_type")),
    # required fields
    Case("empty_body", lambda w: {"headers": w.auth()}, 400, "INVALID_ARGUMENT",
         lambda e, r: _all_missing(e, {"thread_id", "schema_version", "kind", "body"})),
    Case("empty_object", post(lambda w: {}), 400, "INVALID_ARGUMENT",
         lambda e, r: _all_missing(e, {"thread_id", "schema_version", "kind", "body"})),
    Case("empty_body_create_thread", lambda w: {"headers": w.auth()}, 400, "INVALID_ARGUMENT",
         lambda e, r: _all_missing(e, {"title", "type", "participants"}), path="/v1/mcp/create_thread"),
    # wrong types: nothing is coerced
    Case("int_as_string", post(lambda w: w.message(schema_version="1")), 400, "INVALID_ARGUMENT",
         field("schema_version", "int_type")),
    Case("bool_for_int", post(lambda w: w.message(schema_version=True)), 400, "INVALID_ARGUMENT",
         field("schema_version", "int_type")),
    Case("float_for_int", post(lambda w: w.message(schema_version=1.5)), 400, "INVALID_ARGUMENT",
         field("schema_version", "int_type")),
    Case("int_for_string", post(lambda w: w.message(body=5)), 400, "INVALID_ARGUMENT", field("body", "string_type")),
    Case("limit_as_string", post(lambda w: {"thread_id": w.thread_id, "limit": "10"}, "read_messages"), 400,
         "INVALID_ARGUMENT", field("limit", "int_type"), path="/v1/mcp/read_messages"),
    Case("since_seq_bool", post(lambda w: {"thread_id": w.thread_id, "since_seq": False}, "read_messages"), 400,
         "INVALID_ARGUMENT", field("since_seq", "int_type"), path="/v1/mcp/read_messages"),
    Case("participants_as_string", post(lambda w: {"title": "t", "type": "workflow", "participants": "rev"}), 400,
         "INVALID_ARGUMENT", field("participants", "list_type"), path="/v1/mcp/create_thread"),
    Case("metadata_as_list", post(lambda w: w.message(metadata=[1])), 400, "INVALID_ARGUMENT",
         field("metadata", "dict_type")),
    Case("thread_id_bad_syntax", post(lambda w: w.message(thread_id="../etc/passwd")), 400, "INVALID_ARGUMENT",
         field("thread_id", "string_pattern_mismatch")),
    Case("unknown_kind", post(lambda w: w.message(kind="shout")), 400, "INVALID_ARGUMENT", field("kind")),
    Case("schema_version_2", post(lambda w: w.message(schema_version=2)), 400, "INVALID_ARGUMENT",
         field("schema_version", "less_than_equal")),
    Case("limit_over_max", post(lambda w: {"thread_id": w.thread_id, "limit": 201}), 400, "INVALID_ARGUMENT",
         field("limit", "less_than_equal"), path="/v1/mcp/read_messages"),
    Case("wait_ms_over_max", post(lambda w: {"thread_id": w.thread_id, "wait_ms": 30001}), 400,
         "INVALID_ARGUMENT", field("wait_ms"), path="/v1/mcp/read_messages"),
    Case("since_seq_negative", post(lambda w: {"thread_id": w.thread_id, "since_seq": -1}), 400,
         "INVALID_ARGUMENT", field("since_seq"), path="/v1/mcp/read_messages"),
    # unknown fields are refused and listed, never dropped
    Case("unknown_field", post(lambda w: w.message(bodyy="typo")), 400, "INVALID_ARGUMENT",
         field("bodyy", "extra_forbidden")),
    Case("two_unknown_fields", post(lambda w: w.message(sender="x", priority=1)), 400, "INVALID_ARGUMENT",
         lambda e, r: _fields_are(e, {"sender": "extra_forbidden", "priority": "extra_forbidden"})),
    Case("unknown_field_create_thread",
         post(lambda w: {"title": "t", "type": "workflow", "participants": ["rev"], "owner": "x"}), 400,
         "INVALID_ARGUMENT", lambda e, r: _fields_are(e, {"owner": "extra_forbidden"}), path="/v1/mcp/create_thread"),
    # field limits
    Case("body_over_64k", post(lambda w: w.message(body="x" * (64 * KIB + 1))), 400, "INVALID_ARGUMENT",
         field("body")),
    Case("body_over_64k_bytes_not_chars", post(lambda w: w.message(body="é" * (32 * KIB + 1))), 400,
         "INVALID_ARGUMENT", field("body")),
    Case("body_empty", post(lambda w: w.message(body="")), 400, "INVALID_ARGUMENT", field("body")),
    Case("metadata_over_16k", post(lambda w: w.message(metadata={"k": "v" * (16 * KIB)})), 400, "INVALID_ARGUMENT",
         field("metadata")),
    # NUL and lone surrogates
    Case("nul_in_body", post(lambda w: w.message(body="a\x00b")), 400, "INVALID_ARGUMENT", field("body")),
    Case("nul_in_title", post(lambda w: {"title": "a\x00", "type": "workflow", "participants": ["rev"]}), 400,
         "INVALID_ARGUMENT", field("title"), path="/v1/mcp/create_thread"),
    Case("nul_in_reason", post(lambda w: {"thread_id": w.thread_id, "status": "blocked", "reason": "x\x00"}), 400,
         "INVALID_ARGUMENT", field("reason"), path="/v1/mcp/update_thread_status"),
    Case("lone_high_surrogate", post(lambda w: msg_bytes(w, ('"hello"', '"\\ud800"'))), 400, "INVALID_ARGUMENT",
         reason("lone_surrogate")),
    Case("lone_low_surrogate", post(lambda w: msg_bytes(w, ('"hello"', '"a\\udc00b"'))), 400, "INVALID_ARGUMENT",
         reason("lone_surrogate")),
    Case("reversed_surrogate_pair", post(lambda w: msg_bytes(w, ('"hello"', '"\\ude00\\ud83d"'))), 400,
         "INVALID_ARGUMENT", reason("lone_surrogate")),
    Case("lone_surrogate_in_key", post(lambda w: msg_bytes(w, ('"kind"', '"k\\ud800"'))), 400, "INVALID_ARGUMENT",
         reason("lone_surrogate")),
    Case("lone_surrogate_in_metadata",
         post(lambda w: msg_bytes(w, ('"hello"', '"hi", "metadata": {"x": ["\\udfff"]}'))), 400, "INVALID_ARGUMENT",
         reason("lone_surrogate")),
    Case("raw_body_lone_surrogate", post(lambda w: b'{"body":"\\ud800"}'), 400, "INVALID_ARGUMENT",
         reason("lone_surrogate")),
    # nesting
    Case("nesting_33", post(lambda w: w.message(metadata=nested(33))), 400, "INVALID_ARGUMENT", reason("too_deep")),
    Case("nesting_5000_arrays", post(lambda w: b"[" * 5000 + b"]" * 5000), 400, "INVALID_ARGUMENT",
         reason("too_deep")),
    Case("nesting_5000_objects", post(lambda w: b'{"a":' * 5000 + b"1" + b"}" * 5000), 400, "INVALID_ARGUMENT",
         reason("too_deep")),
    Case("nesting_5000_unclosed", post(lambda w: b"[" * 5000), 400, "INVALID_ARGUMENT"),
    # non-finite numbers and duplicate keys
    Case("nan", post(lambda w: msg_bytes(w, ('"hello"', '"hi", "metadata": {"score": NaN}'))), 400,
         "INVALID_ARGUMENT", reason("non_finite_number")),
    Case("infinity", post(lambda w: msg_bytes(w, (": 1,", ": Infinity,"))), 400, "INVALID_ARGUMENT",
         reason("non_finite_number")),
    Case("minus_infinity", post(lambda w: msg_bytes(w, (": 1,", ": -Infinity,"))), 400, "INVALID_ARGUMENT",
         reason("non_finite_number")),
    Case("float_overflowing_to_infinity", post(lambda w: msg_bytes(w, ('"hello"', '"hi", "metadata": {"x": -1e999}'))),
         400, "INVALID_ARGUMENT", reason("non_finite_number")),
    Case("integer_literal_too_long", post(lambda w: msg_bytes(w, (": 1,", ": 1" + "0" * 5000 + ","))), 400,
         "INVALID_ARGUMENT", reason("malformed_json")),
    Case("duplicate_key", post(lambda w: msg_bytes(w, ('"body": "hello"', '"body": "hello", "body": "evil"'))), 400,
         "INVALID_ARGUMENT", reason("duplicate_key")),
    Case("duplicate_nested_key", post(lambda w: msg_bytes(w, ('"hello"', '"hi", "metadata": {"a": 1, "a": 2}'))),
         400, "INVALID_ARGUMENT", reason("duplicate_key")),
    # media type
    Case("text_plain", lambda w: w.post("post_message", dumps(w.message()), "text/plain"), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
    Case("no_content_type", lambda w: w.post("post_message", dumps(w.message()), None), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
    Case("form_urlencoded", lambda w: w.post("post_message", b"body=hello", "application/x-www-form-urlencoded"),
         415, "UNSUPPORTED_MEDIA_TYPE"),
    Case("json_lookalike", lambda w: w.post("post_message", dumps(w.message()), "application/json-patch+json"),
         415, "UNSUPPORTED_MEDIA_TYPE"),
    # routes and methods
    Case("unknown_command", post(lambda w: {}), 404, "NOT_FOUND", path="/v1/mcp/drop_tables"),
    Case("unknown_command_no_token", lambda w: {"json": {}}, 404, "NOT_FOUND", path="/v1/mcp/drop_tables"),
    Case("unknown_route", post(lambda w: {}), 404, "NOT_FOUND", path="/v2/mcp/post_message"),
    Case("empty_command", post(lambda w: {}), 404, "NOT_FOUND", path="/v1/mcp/"),
    Case("extra_path_segment", post(lambda w: w.message()), 404, "NOT_FOUND", path="/v1/mcp/post_message/x"),
    Case("get_unknown_route", lambda w: {}, 404, "NOT_FOUND", path="/admin", method="GET"),
    Case("get_command", lambda w: {"headers": w.auth()}, 405, "METHOD_NOT_ALLOWED", allow("POST"), method="GET"),
    Case("delete_command", lambda w: {"headers": w.auth()}, 405, "METHOD_NOT_ALLOWED", allow("POST"),
         path="/v1/mcp/get_thread", method="DELETE"),
    Case("put_health", lambda w: {}, 405, "METHOD_NOT_ALLOWED", allow("GET"), path="/health", method="PUT"),
    Case("post_metrics", lambda w: {}, 405, "METHOD_NOT_ALLOWED", allow("GET"), path="/metrics"),
    # size: refused before parsing (the body is not even JSON)
    Case("oversized_content_length", lambda w: w.post("post_message", b"x" * (256 * KIB + 1)), 413,
         "PAYLOAD_TOO_LARGE", lambda e, r: _limit(e)),
    Case("oversized_chunked", lambda w: {**w.post("post_message", b""), "data": iter([b"x" * (64 * KIB)] * 5)}, 413,
         "PAYLOAD_TOO_LARGE", lambda e, r: _limit(e)),
    Case("oversized_no_token", lambda w: {"data": b"x" * (300 * KIB)}, 413, "PAYLOAD_TOO_LARGE",
         lambda e, r: _limit(e)),
]


def _all_missing(error: dict[str, Any], names: set[str]) -> None:
    found = fields_of(error)
    assert {n for n, kind in found.items() if kind == "missing"} == names, found


def _limit(error: dict[str, Any]) -> None:
    assert error["details"] == {"limit": 256 * KIB}, error


def _fields_are(error: dict[str, Any], expected: dict[str, str]) -> None:
    assert fields_of(error) == expected, error


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(api, world, case):
    kwargs = case.build(world)
    kwargs.setdefault("headers", {})["x-request-id"] = f"bad-{case.id}"
    reply = api.raw(case.method, case.path, **kwargs)
    error = assert_envelope(reply, case.status, case.code)
    assert reply.headers["x-request-id"] == f"bad-{case.id}"
    if case.check is not None:
        case.check(error, reply)


def test_boundaries_are_accepted(api, world):
    """The other side of each limit: these all succeed (so the refusals above are about the limit)."""
    def send(data: bytes, content_type: str = "application/json") -> Any:
        return api.raw("POST", "/v1/mcp/post_message", **world.post("post_message", data, content_type))

    cases = {
        "body_64k": dumps(world.message(body="x" * (64 * KIB))),
        "body_multibyte_64k": dumps(world.message(body="é" * (32 * KIB))),
        "nesting_32": dumps(world.message(metadata=nested(32))),
        "escaped_surrogate_pair": msg_bytes(world, ('"hello"', '"\\ud83d\\ude00"')),
        "charset_parameter": dumps(world.message(body="charset")),
        "whitespace_kept": dumps(world.message(body="  two  spaces\t\n")),
    }
    sent = {}
    for name, data in cases.items():
        reply = send(data, "application/json; charset=utf-8" if name == "charset_parameter" else "application/json")
        assert reply.status == 200, (name, reply.body)
        sent[reply.body["seq"]] = json.loads(data)["body"]
    # a body of exactly the limit (padded with JSON whitespace) is parsed; one byte more is not
    base = dumps(world.message(body="at-limit"))
    padded = base + b" " * (256 * KIB - len(base))
    reply = send(padded)
    assert reply.status == 200, reply.body
    sent[reply.body["seq"]] = "at-limit"
    assert_envelope(send(padded + b" "), 413, "PAYLOAD_TOO_LARGE")
    read = api.ok("read_messages", world.token, thread_id=world.thread_id, limit=200)
    got = {m["seq"]: m["body"] for m in read["messages"] if m["kind"] == "chat"}
    assert got == sent  # stored byte for byte: not trimmed, the pair decoded to one character
    assert "\U0001f600" in got.values()
    world.counts = world.count()  # these writes were meant


SANE_IDS = ["abc", "A.b_c:d-e", "0", "x" * 128, "trace:2024-01-01T00:00:00.000Z"]
INSANE_IDS = ["x" * 129, "has space", "a/b", "semi;colon", 'quote"d', "tab\tid", "é", "", "<script>"]


@pytest.mark.parametrize("target", ["ok", "unauthorized", "not_found", "too_large"])
def test_sane_request_id_is_echoed(api, world, target):
    for client_id in SANE_IDS:
        reply = _send_with_request_id(api, world, target, client_id)
        assert reply.headers["x-request-id"] == client_id
        if target != "ok":
            assert reply.body["request_id"] == client_id


@pytest.mark.parametrize("target", ["ok", "unauthorized", "not_found", "too_large"])
def test_insane_request_id_is_replaced(api, world, target):
    for client_id in INSANE_IDS:
        first = _send_with_request_id(api, world, target, client_id)
        second = _send_with_request_id(api, world, target, client_id)
        for reply in (first, second):
            generated = reply.headers["x-request-id"]
            assert generated != client_id and SANE_REQUEST_ID.match(generated), (client_id, generated)
            if target != "ok":
                assert reply.body["request_id"] == generated
        assert first.headers["x-request-id"] != second.headers["x-request-id"]


def _send_with_request_id(api: Any, world: World, target: str, request_id: str) -> Any:
    headers = {"x-request-id": request_id}
    if target == "ok":
        return api.raw("POST", "/v1/mcp/get_thread", json={"thread_id": world.thread_id},
                       headers=world.auth(**headers))
    if target == "unauthorized":
        return api.raw("POST", "/v1/mcp/get_thread", json={"thread_id": world.thread_id},
                       headers={"Authorization": "Bearer nope", **headers})
    if target == "not_found":
        return api.raw("GET", "/nowhere", headers=headers)
    return api.raw("POST", "/v1/mcp/get_thread", data=b"x" * (300 * KIB),
                   headers=world.auth(**headers, **{"Content-Type": "application/json"}))


def _raw_http(url: str, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send bytes no well-behaved client would, read the whole response (the server closes after an error)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(("request_bytes", "status", "code", "request_id"), [
    (b"POST /v1/mcp/get_thread HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n"
     b"x-request-id: raw-1\r\nConnection: close\r\n\r\n{}", 400, "INVALID_ARGUMENT", "raw-1"),
    (b"POST /v1/mcp/get_thread HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 300000\r\n"
     b"x-request-id: raw-1\r\nConnection: close\r\n\r\n{}", 413, "PAYLOAD_TOO_LARGE", "raw-1"),
    (b"POST /v1/mcp/get_thread HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\nx-request-id: raw-1\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
     400, "INVALID_ARGUMENT", "raw-1"),
    # exactly 16 KiB and no end of headers: the server answers at the limit, with nothing of ours left unread
    ((lambda head: head + b"f" * (16 * KIB - len(head)))(b"GET /health HTTP/1.1\r\nx-request-id: raw-1\r\nX-F: "),
     431, "INVALID_ARGUMENT", None),
], ids=["content_length_not_a_number", "content_length_over_limit", "bad_chunk_size", "headers_over_16k"])
def test_malformed_http_gets_the_envelope(live_server, world, request_bytes, status, code, request_id):
    """What waitress refuses before the app runs is still answered in the JSON envelope with the request id."""
    got_status, headers, body = _raw_http(live_server.url, request_bytes)
    assert got_status == status, body
    assert headers["content-type"].startswith("application/json")
    assert set(body) == {"error", "request_id", "occurred_at"}
    assert body["error"]["code"] == code
    assert headers["x-request-id"] == body["request_id"]
    if request_id is None:  # the headers were never parsed: a generated id
        assert SANE_REQUEST_ID.match(body["request_id"]) and body["request_id"] != "raw-1"
    else:
        assert body["request_id"] == request_id
