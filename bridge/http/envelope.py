"""The one error envelope and JSON rendering for every HTTP response."""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import ValidationError

from bridge.domain.identifiers import is_request_id, iso, now_ms
from bridge.errors import BridgeError, InvalidArgument


def request_id_from(client_value: str | None) -> str:
    """Echo a sane client request id, else generate one."""
    return client_value if is_request_id(client_value) else f"req_{secrets.token_hex(8)}"


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options builds one per call


def to_json(value: Any) -> bytes:
    """Compact JSON bytes for a response body."""
    return _COMPACT.encode(value).encode("utf-8")


def error_document(error: BridgeError, request_id: str) -> dict[str, Any]:
    """`{"error": {code, message, details}, "request_id", "occurred_at"}`."""
    return {"error": {"code": error.code, "message": error.message, "details": error.details},
            "request_id": request_id, "occurred_at": iso(now_ms())}


def error_body(error: BridgeError, request_id: str) -> bytes:
    """The error envelope as response bytes."""
    return to_json(error_document(error, request_id))


def validation_error(exc: ValidationError) -> InvalidArgument:
    """A pydantic failure as INVALID_ARGUMENT listing each offending field."""
    fields = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"], "type": e["type"]}
              for e in exc.errors(include_url=False, include_input=False)]
    return InvalidArgument("request does not match the command's schema", {"fields": fields})


def error_headers(error: BridgeError) -> list[tuple[str, str]]:
    """Headers an error implies: Retry-After, WWW-Authenticate."""
    headers = []
    if error.retry_after is not None:
        headers.append(("Retry-After", str(error.retry_after)))
    if error.http_status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="bridge"'))
    return headers
