"""Interop: the official TypeScript MCP SDK client (`@modelcontextprotocol/sdk`) against a real `bridge serve` process.

`tests/mcp_ts/client.mjs` connects over Streamable HTTP with bearer tokens, lists the tools, calls them and reports
each step's outcome (or the exception the SDK threw) as one JSON document; these tests judge it. The SDK validates a
result's `structuredContent` against the tool's output schema, so a refused or invalid call must come back as a
tool result with `isError: true` that the client accepts, not as one it throws on. The pinned SDK is installed into
`tests/mcp_ts/node_modules` by `./scripts/test`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.testing.processes import clean_env
from bridge.testing.service import service_stack

ROOT = Path(__file__).resolve().parents[1]
CLIENT_DIR = ROOT / "tests" / "mcp_ts"
SDK = CLIENT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"


def _require_client() -> str:
    """The `node` executable, once the pinned SDK is installed; a failure (not a skip) naming the fix otherwise."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run ./scripts/test (it installs nodejs and the pinned MCP SDK)")
    if not SDK.is_file():
        pytest.fail(f"{SDK.relative_to(ROOT)} is missing: run ./scripts/test (it installs the pinned MCP SDK "
                    "from tests/mcp_ts/package-lock.json)")
    return node


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the TypeScript client once against a fresh real stack; its JSON report."""
    node = _require_client()
    with service_stack(tmp_path_factory.mktemp("mcp-ts") / "stack") as stack:
        env = clean_env({"BRIDGE_URL": stack.url, "BRIDGE_TOKEN": stack.token("coord", "coordinator"),
                         "BRIDGE_PARTICIPANT_TOKEN": stack.token("a", "participant")})
        done = subprocess.run([node, str(CLIENT_DIR / "client.mjs")], capture_output=True, text=True, env=env,
                              cwd=str(ROOT), timeout=120, check=False)
    assert done.returncode == 0, f"client.mjs exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def _step(report: dict[str, Any], name: str) -> dict[str, Any]:
    step = report["steps"].get(name)
    assert step is not None, f"step {name!r} never ran: {json.dumps(report['steps'], indent=1)}"
    return step


def _tool_result(report: dict[str, Any], name: str) -> dict[str, Any]:
    """A step the SDK returned (did not throw on)."""
    step = _step(report, name)
    assert not step["threw"], f"the TypeScript SDK threw on {name}: {step['error']}"
    return step


def _ok_result(report: dict[str, Any], name: str) -> dict[str, Any]:
    step = _tool_result(report, name)
    assert step["isError"] is False, f"{name} is an error result: {step['text']}"
    assert step["hasStructuredContent"], step
    return step["structuredContent"]


def test_the_sdk_connects_and_lists_the_tools(report):
    assert report["sdk_version"] == json.loads((CLIENT_DIR / "package.json").read_text())["dependencies"][
        "@modelcontextprotocol/sdk"]
    connected = _step(report, "connect")
    assert not connected["threw"], connected["error"]
    assert connected["serverVersion"]["name"] == "agent-bridge"
    assert {"create_thread", "post_message", "read_messages"} <= set(_step(report, "list_tools")["tools"])


def test_create_post_and_read_round_trip(report):
    created = _ok_result(report, "create_thread")
    assert created["thread_id"] and created["thread_id"] == report["thread_id"]
    posted = _ok_result(report, "post_message")
    assert posted["seq"] == 1 and posted["message_id"]
    read = _ok_result(report, "read_messages")
    assert [(m["message_id"], m["seq"], m["sender_agent_id"], m["kind"], m["body"]) for m in read["messages"]] == [
        (posted["message_id"], 1, "coord", "chat", "hi")]


def test_invalid_argument_is_a_tool_error_the_sdk_accepts(report):
    """post_message without schema_version: `isError: true` naming the code and the field, no exception."""
    invalid = _tool_result(report, "bad_argument")
    assert invalid["isError"] is True, invalid
    assert "INVALID_ARGUMENT" in invalid["text"] and "schema_version" in invalid["text"], invalid["text"]


def test_forbidden_is_a_tool_error_the_sdk_accepts(report):
    """A participant may not create threads: `isError: true` with FORBIDDEN, no exception."""
    assert not _step(report, "participant_connect")["threw"], _step(report, "participant_connect")["error"]
    refused = _tool_result(report, "forbidden")
    assert refused["isError"] is True, refused
    assert "FORBIDDEN" in refused["text"], refused["text"]
