"""post_message and read_messages: in-process through the service layer, and over real HTTP (FULL durability).

    python -m pytest benchmarks --benchmark-only
"""

from __future__ import annotations

import itertools
import json

from bridge_ops.load import BODY, READ_SINCE

from bridge.domain.models import PostMessageInput, ReadMessagesInput
from bridge.services import messages

# ------------------------------------------------------------------------------------------------ in-process


def test_post_message_inprocess(benchmark, bench):
    """Validation of the input, the write transaction (group-commit writer, BEGIN IMMEDIATE, fsync) and events."""
    keys = itertools.count()
    call = bench.writer

    def post() -> dict:
        req = PostMessageInput(thread_id=bench.post_thread, schema_version=1, kind="chat", body=BODY,
                               idempotency_key=f"k{next(keys)}")
        return messages.post_message(bench.parts.bridge, call, req)

    result = benchmark(post)
    assert result["replayed"] is False
    benchmark.extra_info["synchronous"] = "FULL"


def test_read_messages_inprocess(benchmark, bench):
    """One read transaction returning 10 messages with the unread count."""
    call = bench.reader
    req = ReadMessagesInput(thread_id=bench.read_thread, since_seq=READ_SINCE, limit=50)
    result = benchmark(messages.read_messages, bench.parts.bridge, call, req)
    assert len(result["messages"]) == 10


# ------------------------------------------------------------------------------------------------ over HTTP


def test_health_http(benchmark, live):
    """GET /health on the same server: the HTTP ceiling the two commands are compared with."""
    status, _, _ = benchmark(live.anonymous.raw, "GET", "/health")
    assert status == 200


def test_post_message_http(benchmark, live):
    """POST /v1/mcp/post_message over a keep-alive connection with a real EdDSA token."""
    keys = itertools.count()

    def post() -> tuple[int, dict[str, str], bytes]:
        body = json.dumps({"thread_id": live.bench.post_thread, "schema_version": 1, "kind": "chat", "body": BODY,
                           "idempotency_key": f"k{next(keys)}"}).encode()
        return live.writer.raw("POST", "/v1/mcp/post_message", body, live.writer_headers)

    status, _, raw = benchmark(post)
    assert status == 200, raw
    assert json.loads(raw)["replayed"] is False


def test_read_messages_http(benchmark, live):
    """POST /v1/mcp/read_messages returning 10 messages over a keep-alive connection."""
    body = json.dumps({"thread_id": live.bench.read_thread, "since_seq": READ_SINCE, "limit": 50}).encode()
    status, _, raw = benchmark(live.reader.raw, "POST", "/v1/mcp/read_messages", body, live.reader_headers)
    assert status == 200, raw
    assert len(json.loads(raw)["messages"]) == 10
