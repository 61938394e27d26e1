"""Where the bridge is, for what an agent (or `bridge mcp`) is given: `--url`, else `$BRIDGE_URL`, else the
settings'."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from bridge.cli.output import fail
from bridge.errors import BridgeError, InvalidArgument


def bridge_url(url: str | None, as_json: bool, default: str | None = None) -> str:
    """The bridge's base URL an agent (or `bridge mcp`) is given: `--url`, else `$BRIDGE_URL`, else `default` (the
    settings' address), else the address BRIDGE_HOST/BRIDGE_PORT name; a trailing /mcp is dropped.

    Exit 2 unless it is an http(s) URL, or on a bad setting."""
    value = (url or os.environ.get("BRIDGE_URL") or default or _settings_url(as_json)).rstrip("/").removesuffix("/mcp")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(InvalidArgument(f"--url {value!r} is not an http:// or https:// URL"), as_json)
    return value


def _settings_url(as_json: bool) -> str:
    """The bridge's own URL from BRIDGE_HOST/BRIDGE_PORT (default http://127.0.0.1:8765); exit 2 on a bad setting."""
    from bridge.settings import Settings

    try:
        return Settings.load().url
    except BridgeError as error:
        fail(error, as_json)
        raise  # not reached: fail() exits
