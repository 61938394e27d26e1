"""The hostile-input scenario at a small scale: generated malformed requests and schemathesis examples against a
real `bridge serve`; no 5xx, every answer in its documented shape, memory bounded, the server healthy after."""

from __future__ import annotations

import json

import pytest
from bridge_ops.reliability.figures import Scale
from bridge_ops.reliability.hostile import Answer, Ledger, answer_problem, run

ENVELOPE = {"error": {"code": "NOT_FOUND", "message": "thread not found", "details": {}},
            "request_id": "req_1", "occurred_at": "2026-12-01T00:00:00.000Z"}
JSON = {"content-type": "application/json", "x-request-id": "req_1"}
MEASURES = ["generated hostile requests sent", "5xx answers to hostile requests",
            "answers outside the envelope / JSON-RPC shape", "hostile requests without an answer",
            "schemathesis: 5xx answers", "schemathesis: answers outside the envelope",
            "schemathesis: check failures", "server RSS growth over the run", "server healthy afterwards"]


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, JSON if headers is None else headers, raw)


def test_the_judge_sees_every_kind_of_bad_answer() -> None:
    assert answer_problem("/v1/mcp/get_thread", answer(404, ENVELOPE)) is None
    assert answer_problem("/v1/mcp/get_thread", answer(404, b"<html>not found</html>"))
    assert answer_problem("/v1/mcp/get_thread", answer(404, {**ENVELOPE, "extra": 1}))
    assert answer_problem("/v1/mcp/get_thread", answer(404, {**ENVELOPE, "request_id": "req_2"}))
    assert answer_problem("/v1/mcp/get_thread", answer(400, {**ENVELOPE, "error": {"code": "OOPS", "message": "x",
                                                                                    "details": {}}}))
    assert answer_problem("/v1/mcp/get_thread", answer(404, ENVELOPE, {"content-type": "text/html"}))
    assert answer_problem("/mcp", answer(200, {"jsonrpc": "2.0", "id": 1, "result": {}})) is None
    assert answer_problem("/mcp", answer(202, b"")) is None
    assert answer_problem("/mcp", answer(401, ENVELOPE)) is None
    assert answer_problem("/mcp", answer(200, {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}))
    assert answer_problem("/mcp", answer(200, {"id": 1, "result": {}}))
    ledger = Ledger()
    ledger.record("v1:x", "/v1/mcp/get_thread", answer(500, ENVELOPE))
    ledger.record("v1:x", "/v1/mcp/get_thread", TimeoutError("no answer"))
    assert (ledger.sent, ledger.server_errors, ledger.misshapen, ledger.unanswered) == (2, 1, 0, 1)


@pytest.mark.slow
def test_hostile_input_scenario(tmp_path, figures_check) -> None:
    figures = run(Scale(n=1), tmp_path)
    figures_check(figures, MEASURES)
    sent = next(f for f in figures if f.measure.startswith("generated hostile requests"))
    assert sent.count >= Scale(n=1).malformed_bodies
