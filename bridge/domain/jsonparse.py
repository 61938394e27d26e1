"""Strict JSON parsing for request bodies: no NaN/Infinity, no duplicate keys, nesting ≤ 32, no lone surrogates.

pydantic would silently keep the last duplicate key and bottle's `request.json` turns deep nesting into a 500,
so bodies are parsed here first and only then validated against the command's model.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from bridge.domain.vocabulary import Reason
from bridge.errors import InvalidArgument

MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise InvalidArgument(f"JSON constant {name} is not allowed", {"reason": Reason.NON_FINITE_NUMBER})


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # a literal such as 1e999 overflows to infinity without any NaN/Infinity token
        raise InvalidArgument(f"JSON number {text[:40]} is out of range", {"reason": Reason.NON_FINITE_NUMBER})
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidArgument(f"duplicate JSON key {key!r}", {"reason": Reason.DUPLICATE_KEY, "key": key})
        result[key] = value
    return result


# One strict decoder, made once (json.loads with hooks builds one per call); decoders are safe to share.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                            parse_float=_finite_float)


def parse_json(raw: bytes | str) -> Any:
    """Parse a request body strictly; raise INVALID_ARGUMENT with a reason on any violation."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument("body is not valid UTF-8", {"reason": Reason.INVALID_UTF8}) from exc
    else:
        text = raw
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise InvalidArgument(f"JSON nesting deeper than {MAX_DEPTH}", {"reason": Reason.TOO_DEEP}) from exc
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise InvalidArgument(f"malformed JSON: {exc}", {"reason": Reason.MALFORMED_JSON}) from exc
    if _may_violate(text, decoded=isinstance(raw, bytes)):
        _check(value, 1)
    return value


# A lone surrogate can only come from a `\uD800`-`\uDFFF` escape, or a raw surrogate character in a str body.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _may_violate(text: str, *, decoded: bool) -> bool:
    """False when the parsed value cannot break the nesting or surrogate rule, so it need not be walked: at most
    MAX_DEPTH opening brackets, no surrogate escape, and no raw surrogate (none when `decoded` from UTF-8 bytes).
    Brackets and escapes inside strings over-count, which only costs the walk."""
    if text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        return True
    if not decoded:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
    return False


def _check(value: Any, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise InvalidArgument(f"JSON nesting deeper than {MAX_DEPTH}", {"reason": Reason.TOO_DEEP})
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_string(key)
            _check(item, depth + 1)
    elif isinstance(value, str):
        _check_string(value)


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("strings must not contain lone surrogates", {"reason": Reason.LONE_SURROGATE}) from exc
