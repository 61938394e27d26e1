"""The bridge's words, defined once: message event types, roles and `details.reason` codes.

Every module that writes or compares one of these imports it from here. Standard library only: the CLI's fast path
may import it without paying for pydantic. The members are `str` enums, so they compare equal to (and are stored,
encoded and logged as) their plain values.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """`metadata.event_type` of a message: the structured events agents post, and those of the bridge's own system
    messages."""

    # Posted by agents (kind=event).
    FINDING_REPORTED = "finding_reported"
    FIX_PUSHED = "fix_pushed"
    RE_REVIEW_REQUESTED = "re_review_requested"
    FINDING_VERIFIED = "finding_verified"
    FINDING_REJECTED = "finding_rejected"
    FINDING_RESOLVED = "finding_resolved"  # closes a finding, like finding_verified (see CLOSING_EVENTS)
    RESOLVED = "resolved"  # the short form of finding_resolved, accepted for the same purpose
    # Written by the bridge (kind=system): a thread's status change (lifecycle.py) or its participant list.
    THREAD_ESCALATED = "thread_escalated"
    THREAD_RESOLVED = "thread_resolved"
    THREAD_CLOSED = "thread_closed"
    THREAD_UNBLOCKED = "thread_unblocked"
    THREAD_REOPENED = "thread_reopened"
    THREAD_STATUS_UNCHANGED = "thread_status_unchanged"
    PARTICIPANTS_UPDATED = "participants_updated"


AGENT_EVENTS: tuple[EventType, ...] = (
    EventType.FINDING_REPORTED, EventType.FIX_PUSHED, EventType.RE_REVIEW_REQUESTED, EventType.FINDING_VERIFIED,
    EventType.FINDING_REJECTED, EventType.THREAD_ESCALATED, EventType.THREAD_RESOLVED,
)
"""The structured events the API documents for agents to post."""

CLOSING_EVENTS = frozenset({EventType.FINDING_VERIFIED, EventType.FINDING_RESOLVED, EventType.RESOLVED})
"""Events that close the finding they reply to (`in_reply_to`) or name (`metadata.finding_id`) in a summary."""

PROGRESS_EVENTS = frozenset({EventType.FIX_PUSHED, EventType.FINDING_VERIFIED, EventType.THREAD_RESOLVED})
"""Events the loop guard counts as progress."""


class Role(StrEnum):
    """Who a caller is: a token's role (the first three), an operator at the CLI, the wake worker, the bridge
    itself as the sender of system messages, or a caller without a valid token (in the audit of its refusal)."""

    PARTICIPANT = "participant"
    COORDINATOR = "coordinator"
    AUDITOR = "auditor"
    OPERATOR = "operator"
    WORKER = "worker"
    SYSTEM = "system"
    UNAUTHENTICATED = "unauthenticated"


TOKEN_ROLES: tuple[str, ...] = (Role.PARTICIPANT.value, Role.COORDINATOR.value, Role.AUDITOR.value)
"""The roles a token may carry, as plain strings (click's `Choice` would offer an enum's member names)."""


class Reason(StrEnum):
    """`details.reason` of an error envelope (which rule refused the request), and the reason of a refused wait."""

    # FORBIDDEN
    ROLE_NOT_ALLOWED = "role_not_allowed"
    NOT_PARTICIPANT = "not_participant"
    CLAIM_MISMATCH = "claim_mismatch"
    OWNER_RULE = "owner_rule"
    OVERRIDE_REQUIRED = "override_required"
    WORKER_CANNOT_FORCE_CLOSE = "worker_cannot_force_close"
    SYSTEM_RESERVED = "system_reserved"
    # INVALID_ARGUMENT (the JSON body) and CONFLICT
    NON_FINITE_NUMBER = "non_finite_number"
    DUPLICATE_KEY = "duplicate_key"
    INVALID_UTF8 = "invalid_utf8"
    TOO_DEEP = "too_deep"
    MALFORMED_JSON = "malformed_json"
    LONE_SURROGATE = "lone_surrogate"
    BAD_CONTENT_LENGTH = "bad_content_length"
    CURSOR_REGRESSION = "cursor_regression"
    # UNAUTHORIZED: no credentials, or a token refused
    MISSING_CREDENTIALS = "missing_credentials"
    EXPIRED = "expired"
    REVOKED = "revoked"
    MALFORMED = "malformed"
    FORBIDDEN_HEADER = "forbidden_header"
    UNKNOWN_KEY = "unknown_key"
    ALGORITHM = "algorithm"
    AUDIENCE = "audience"
    ISSUER = "issuer"
    MISSING_CLAIM = "missing_claim"
    BAD_SIGNATURE = "bad_signature"
    NOT_YET_VALID = "not_yet_valid"
    INVALID = "invalid"
    ILL_TYPED_CLAIM = "ill_typed_claim"
    LIFETIME = "lifetime"
    # RATE_LIMITED, and a long-poll that was not granted
    WRITE_QUOTA = "write_quota"
    AGENT_LONG_POLL_LIMIT = "agent_long_poll_limit"
    SERVER_LONG_POLL_LIMIT = "server_long_poll_limit"
    # UNAVAILABLE: the store (all but database_busy also degrade /ready), the server, tmux, the CLI setup
    DATABASE_BUSY = "database_busy"
    DISK_FULL = "disk_full"
    FILE_TOO_LARGE = "file_too_large"
    READ_ONLY = "read_only"
    STORAGE_ERROR = "storage_error"
    SCHEMA_TOO_NEW = "schema_too_new"
    FROZEN = "frozen"
    SHUTTING_DOWN = "shutting_down"
    TMUX_UNAVAILABLE = "tmux_unavailable"
    TMUX_MISSING = "tmux_missing"
    CANNOT_LISTEN = "cannot_listen"
    DATABASE_LOCKED = "database_locked"
    DATABASE_MISSING = "database_missing"
    DATABASE_NOT_CREATABLE = "database_not_creatable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    KEY_NOT_HELD = "key_not_held"
    SERVER_UNREACHABLE = "server_unreachable"
