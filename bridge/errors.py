"""The one error tree: each class carries its wire code, HTTP status and CLI exit code.

Adding an error means adding a class here; the HTTP envelope and the CLI both read these attributes.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BridgeError(Exception):
    """Base of every error the bridge reports to a client or operator."""

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    retry_after: int | None = None
    audited: bool = False  # set once an audit event recorded this refusal

    def __init__(self, message: str, details: dict[str, Any] | None = None, *, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidArgument(BridgeError):
    code, http_status, exit_code = "INVALID_ARGUMENT", 400, 2


class Unauthorized(BridgeError):
    code, http_status, exit_code = "UNAUTHORIZED", 401, 1


class Forbidden(BridgeError):
    code, http_status, exit_code = "FORBIDDEN", 403, 1


class WorkspaceMismatch(BridgeError):
    code, http_status, exit_code = "WORKSPACE_MISMATCH", 403, 1


class NotFound(BridgeError):
    code, http_status, exit_code = "NOT_FOUND", 404, 3


class MethodNotAllowed(BridgeError):
    code, http_status, exit_code = "METHOD_NOT_ALLOWED", 405, 2


class Conflict(BridgeError):
    code, http_status, exit_code = "CONFLICT", 409, 1


class InvalidThreadTransition(BridgeError):
    code, http_status, exit_code = "INVALID_THREAD_TRANSITION", 409, 1


class ThreadClosed(BridgeError):
    code, http_status, exit_code = "THREAD_CLOSED", 409, 1


class IdempotencyConflict(BridgeError):
    code, http_status, exit_code = "IDEMPOTENCY_CONFLICT", 409, 1


class PayloadTooLarge(BridgeError):
    code, http_status, exit_code = "PAYLOAD_TOO_LARGE", 413, 2


class UnsupportedMediaType(BridgeError):
    code, http_status, exit_code = "UNSUPPORTED_MEDIA_TYPE", 415, 2


class RateLimited(BridgeError):
    code, http_status, exit_code = "RATE_LIMITED", 429, 1


class Unavailable(BridgeError):
    code, http_status, exit_code = "UNAVAILABLE", 503, 4
    retry_after = 1


class Internal(BridgeError):
    code, http_status, exit_code = "INTERNAL", 500, 1


class SchemaTooNew(BridgeError):
    """The database was written by a newer version of the bridge."""

    code, http_status, exit_code = "UNAVAILABLE", 503, 4


class ConfigError(BridgeError):
    """Invalid configuration: raised at start-up, never on the wire."""

    code, http_status, exit_code = "INVALID_ARGUMENT", 400, 2


ERROR_CLASSES: tuple[type[BridgeError], ...] = (
    InvalidArgument, Unauthorized, Forbidden, WorkspaceMismatch, NotFound, MethodNotAllowed, Conflict,
    InvalidThreadTransition, ThreadClosed, IdempotencyConflict, PayloadTooLarge, UnsupportedMediaType,
    RateLimited, Unavailable, Internal,
)
