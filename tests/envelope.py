"""Assertions on the documented error envelope, shared by the HTTP suites."""

from __future__ import annotations

import re
from typing import Any

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def assert_envelope(reply: Any, status: int, code: str) -> dict[str, Any]:
    """Exact status and code, the envelope's exact shape, and a sane x-request-id equal to the body's."""
    assert reply.status == status, (reply.status, reply.body)
    body = reply.body
    assert isinstance(body, dict), body
    assert set(body) == {"error", "request_id", "occurred_at"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert ISO_MS.match(body["occurred_at"]), body["occurred_at"]
    assert reply.headers["Content-Type"].startswith("application/json")
    assert SANE_REQUEST_ID.match(reply.headers["x-request-id"])
    assert reply.headers["x-request-id"] == body["request_id"]
    return body["error"]
