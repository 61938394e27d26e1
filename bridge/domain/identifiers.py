"""Identifier syntax, id generation and wire timestamps."""

from __future__ import annotations

import functools
import re
import secrets
import time
from datetime import UTC, datetime

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def is_identifier(value: object) -> bool:
    """True when `value` is a string of identifier syntax."""
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None


def is_request_id(value: str | None) -> bool:
    """True for a client request id we may echo (at most 128 chars of `[A-Za-z0-9._:-]`)."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def new_id(prefix: str) -> str:
    """A new unique id: prefix, millisecond time (sortable) and randomness."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def now_ms() -> int:
    """Current time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO-8601 UTC with milliseconds and `Z`."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of a unix second (cached: the timestamps of a request share their second)."""
    t = time.gmtime(seconds)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def parse_iso(text: str) -> int:
    """ISO-8601 (with `Z` or offset) to milliseconds since the epoch."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
