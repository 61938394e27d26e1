"""`bridge mcp` (the stdio MCP server forwarding to a running bridge) and `bridge mcp config`, against a real
`bridge serve` process on 127.0.0.1 (`bridge.testing.service.service_stack`): the official `mcp` SDK client over
stdio, a bridge that is down, and the printed Claude Code / Codex / JSON configurations checked by parsing them and
using the token they mint."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from bridge.mcp_stdio import header_value, routing_headers
from bridge.testing.client import Client
from bridge.testing.processes import bridge_argv, clean_env, kill_pids, run_bridge, unused_port
from bridge.testing.service import ServiceStack as Stack
from bridge.testing.service import service_stack

TOOLS = {"create_thread", "post_message", "read_messages"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One real bridge server for the module, stopped by PID at the end."""
    with service_stack(tmp_path_factory.mktemp("mcp-stdio")) as running:
        yield running


def token_file(stack: Stack, tmp_path: Path, agent_id: str, role: str = "participant") -> Path:
    path = tmp_path / f"{agent_id}.token"
    path.write_text(stack.token(agent_id, role) + "\n")
    return path


def inbox_status(stack: Stack, token: str) -> int:
    """HTTP status of `POST /v1/mcp/inbox` with this token."""
    with Client(stack.url, token, timeout=10) as client:
        status = client.call("inbox").status
    assert status is not None, "no answer from the bridge"
    return status


# --- the official SDK client over stdio --------------------------------------------------------------------------


async def sdk_session(url: str, token_path: Path, errlog: IO[str], steps: Any) -> Any:
    """Start `python -m bridge mcp` with the SDK's stdio client, initialize, and run `steps(session)`."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "bridge", "mcp", "--url", url, "--token-file", str(token_path)])
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await steps(session)


def test_official_sdk_client_over_stdio(stack: Stack, tmp_path: Path) -> None:
    coord, rev = token_file(stack, tmp_path, "coord", "coordinator"), token_file(stack, tmp_path, "rev")
    errlog_path = tmp_path / "stderr.log"

    async def as_coordinator(session: Any) -> tuple[set[str], Any]:
        tools = await session.list_tools()
        created = await session.call_tool("create_thread", {"title": "over stdio", "type": "workflow",
                                                            "participants": ["rev"]})
        return {t.name for t in tools.tools}, created

    async def as_reviewer(session: Any) -> tuple[Any, Any, Any]:
        posted = await session.call_tool("post_message", {"thread_id": thread_id, "schema_version": 1,
                                                          "kind": "chat", "body": "hello over stdio"})
        read = await session.call_tool("read_messages", {"thread_id": thread_id, "since_seq": 0})
        bad = await session.call_tool("post_message", {"thread_id": thread_id, "kind": "chat", "body": "no version"})
        return posted, read, bad

    with open(errlog_path, "w") as errlog:
        names, created = asyncio.run(sdk_session(stack.url, coord, errlog, as_coordinator))
        assert names >= TOOLS
        assert created.is_error is False, created
        thread_id = created.structured_content["thread_id"]
        posted, read, bad = asyncio.run(sdk_session(stack.url, rev, errlog, as_reviewer))

    assert posted.is_error is False and posted.structured_content["seq"] == 1
    assert read.is_error is False
    assert [(m["sender_agent_id"], m["body"]) for m in read.structured_content["messages"]] == [
        ("rev", "hello over stdio")]
    assert bad.is_error is True
    assert "schema_version" in bad.content[0].text and "INVALID_ARGUMENT" in bad.content[0].text
    logs = [json.loads(line) for line in errlog_path.read_text().splitlines() if line.strip()]
    assert logs and all("level" in entry for entry in logs)  # stderr carries JSON log lines, stdout only protocol


def test_sdk_client_default_connect_over_stdio(stack: Stack, tmp_path: Path) -> None:
    """`mcp.client.Client`'s default `mode="auto"`: a `server/discover` probe (2026-07-28 envelope), then whatever
    the bridge answers — the modern era, or the initialize handshake as the fallback — through the forwarder."""
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    coord = token_file(stack, tmp_path, "coord", "coordinator")
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "bridge", "mcp", "--url", stack.url, "--token-file", str(coord)])

    async def connect(errlog: IO[str]) -> tuple[str | None, set[str], Any]:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = await client.list_tools()
            created = await client.call_tool("create_thread", {"title": "auto", "type": "conversation",
                                                               "participants": ["rev"]})
            return client.session.protocol_version, {t.name for t in tools.tools}, created

    with open(tmp_path / "stderr.log", "w") as errlog:
        version, names, created = asyncio.run(connect(errlog))
    assert version is not None and names >= TOOLS
    assert created.is_error is False and created.structured_content["status"] == "active"


# --- driving the stdio server by hand ----------------------------------------------------------------------------


class StdioServer:
    """`python -m bridge mcp ...` as a child process with pipes; stopped by PID."""

    def __init__(self, args: list[str], stderr_path: Path):
        self.stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=clean_env())
        self.lines: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and read the one line that answers it."""
        assert self.proc.stdout is not None
        self.send(message)
        line = self.proc.stdout.readline()
        self.lines.append(line)
        return json.loads(line)

    def close_stdin(self, timeout: float = 20.0) -> int:
        """EOF on stdin; the exit status, and every remaining stdout line collected."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.lines += self.proc.stdout.read().splitlines(keepends=True)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
        self.proc.terminate()
        kill_pids([self.proc.pid], grace=20)
        self.proc.wait(timeout=10)
        self.stderr.close()


def initialize(rpc_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}


def tool_call(rpc_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_bridge_down_gives_tool_errors_and_eof_exits_cleanly(stack: Stack, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    server = StdioServer(bridge_argv("mcp", "--url", url, "--token-file", str(token_file(stack, tmp_path, "rev"))),
                         tmp_path / "stderr.log")
    try:
        init = server.ask(initialize())
        assert init["id"] == 1 and init["error"]["code"] == -32603
        assert f"bridge unavailable at {url}" in init["error"]["message"]
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})  # no line for a notification
        called = server.ask(tool_call(2, "read_messages", {"thread_id": "thr_x"}))
        assert called["id"] == 2 and called["result"]["isError"] is True
        text = called["result"]["content"][0]["text"]
        assert text.startswith(f"bridge unavailable at {url}: ") and "refused" in text.lower()
        assert server.proc.poll() is None  # still serving
        assert server.ask(tool_call(3, "inbox", {}))["result"]["isError"] is True
        assert server.close_stdin() == 0
    finally:
        server.stop()
    replies = [json.loads(line) for line in server.lines]
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert all(r["jsonrpc"] == "2.0" and line.endswith(b"\n") for r, line in zip(replies, server.lines, strict=True))
    assert b"bridge unavailable" in (tmp_path / "stderr.log").read_bytes()  # the log went to stderr


def test_refused_token_is_a_tool_error_and_a_renewed_token_file_is_read_without_restart(stack: Stack,
                                                                                      tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    path.write_text("not-a-token")
    server = StdioServer(bridge_argv("mcp", "--url", stack.url, "--token-file", str(path)), tmp_path / "stderr.log")
    try:
        refused = server.ask(tool_call(1, "inbox", {}))
        assert refused["result"]["isError"] is True
        assert "refused the request: HTTP 401 UNAUTHORIZED" in refused["result"]["content"][0]["text"]
        path.write_text(stack.token("rev"))
        assert server.ask(initialize(2))["result"]["serverInfo"]["name"] == "agent-bridge"
        inbox = server.ask(tool_call(3, "inbox", {}))
        assert inbox["result"]["isError"] is False
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert server.ask({"jsonrpc": "2.0", "id": 4, "method": "ping"}) == {"jsonrpc": "2.0", "id": 4, "result": {}}
        assert server.close_stdin() == 0
    finally:
        server.stop()
    assert [json.loads(line)["id"] for line in server.lines] == [1, 2, 3, 4]


def test_no_token_is_refused_at_start(tmp_path: Path) -> None:
    result = run_bridge("mcp", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and result.stdout == ""
    assert "BRIDGE_TOKEN" in result.stderr


def test_routing_headers_follow_the_envelope_or_the_negotiated_version() -> None:
    modern = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "post_message", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    assert routing_headers(modern, "2025-06-18") == {"MCP-Protocol-Version": "2026-07-28",
                                                     "Mcp-Method": "tools/call", "Mcp-Name": "post_message"}
    assert routing_headers({"method": "tools/list"}, "2025-06-18") == {"MCP-Protocol-Version": "2025-06-18"}
    assert routing_headers({"method": "initialize"}, "2025-06-18") == {}
    assert header_value("café") == "=?base64?Y2Fmw6k=?="


# --- bridge mcp config -------------------------------------------------------------------------------------------


def config(stack: Stack, *args: str) -> str:
    result = stack.bridge("mcp", "config", "--url", stack.url, "--db", str(stack.db), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def exported_token(output: str) -> str:
    """The token of the one `export BRIDGE_TOKEN=...` line (the only place it may appear)."""
    exports = [line for line in output.splitlines() if line.startswith("export BRIDGE_TOKEN=")]
    assert len(exports) == 1, output
    token = exports[0].split("=", 1)[1]
    assert output.count(token) == 1
    return token


VARIADIC = {"--header": "header", "-H": "header", "--env": "env", "-e": "env"}
WITH_VALUE = {"--transport": "transport", "-t": "transport", "--scope": "scope", "-s": "scope",
              "--client-id": "client-id", "--callback-port": "callback-port"}


def parse_claude_mcp_add(argv: list[str]) -> dict[str, Any]:
    """`claude mcp add` as its option parser (Commander) reads it: a variadic option takes every following word up to
    the next option, so a name placed after `--header` would be swallowed as a header."""
    assert argv[:3] == ["claude", "mcp", "add"]
    options: dict[str, list[str]] = {}
    positional: list[str] = []
    words = argv[3:]
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            positional += words[i + 1:]
            break
        if word in WITH_VALUE:
            options.setdefault(WITH_VALUE[word], []).append(words[i + 1])
            i += 2
        elif word in VARIADIC:
            i += 1
            while i < len(words) and not words[i].startswith("-"):
                options.setdefault(VARIADIC[word], []).append(words[i])
                i += 1
        else:
            positional.append(word)
            i += 1
    return {"name": positional[0] if positional else None, "target": positional[1:], "options": options,
            "name_index": argv.index(positional[0]) if positional else None}


def test_config_for_claude_code_over_http(stack: Stack) -> None:
    output = config(stack, "--client", "claude", "--agent-id", "reviewer")
    token = exported_token(output)
    assert inbox_status(stack, token) == 200

    add_lines = [line for line in output.splitlines() if line.startswith("claude mcp add ")]
    assert len(add_lines) == 1
    argv = shlex.split(add_lines[0])
    parsed = parse_claude_mcp_add(argv)
    assert parsed["name"] == "bridge" and parsed["name_index"] < argv.index("--header")
    assert parsed["options"]["transport"] == ["http"]
    assert parsed["target"] == [f"{stack.url}/mcp"]
    assert parsed["options"]["header"] == ["Authorization: Bearer ${BRIDGE_TOKEN}"]

    lines = output.splitlines()
    start = lines.index("{")
    document = json.loads("\n".join(lines[start:lines.index("}", start) + 1]))
    assert document == {"mcpServers": {"bridge": {"type": "http", "url": f"{stack.url}/mcp",
                                                  "headers": {"Authorization": "Bearer ${BRIDGE_TOKEN}"}}}}
    assert "bridge token issue --agent-id reviewer --role participant" in lines[-1]


def test_config_for_claude_code_over_stdio(stack: Stack) -> None:
    output = config(stack, "--client", "claude", "--agent-id", "reviewer", "--transport", "stdio")
    assert inbox_status(stack, exported_token(output)) == 200
    argv = shlex.split(next(line for line in output.splitlines() if line.startswith("claude mcp add ")))
    parsed = parse_claude_mcp_add(argv)
    assert parsed["name"] == "bridge" and parsed["options"]["env"] == ["BRIDGE_TOKEN=${BRIDGE_TOKEN}"]
    assert argv.index("bridge") < argv.index("-e") < argv.index("--")
    assert parsed["target"][1:] == ["mcp", "--url", stack.url]


def codex_table(output: str) -> dict[str, Any]:
    """The `[mcp_servers.bridge]` block (and the comment lines after it) as TOML."""
    lines = output.splitlines()
    return tomllib.loads("\n".join(lines[lines.index("[mcp_servers.bridge]"):]))["mcp_servers"]["bridge"]


def test_config_for_codex(stack: Stack) -> None:
    output = config(stack, "--client", "codex", "--agent-id", "executioner")
    assert inbox_status(stack, exported_token(output)) == 200
    assert codex_table(output) == {"url": f"{stack.url}/mcp", "bearer_token_env_var": "BRIDGE_TOKEN"}
    assert '# default_tools_approval_mode = "approve"' in output
    add = shlex.split(next(line for line in output.splitlines() if line.startswith("codex mcp add ")))
    assert add == ["codex", "mcp", "add", "bridge", "--url", f"{stack.url}/mcp", "--bearer-token-env-var",
                   "BRIDGE_TOKEN"]

    stdio = config(stack, "--client", "codex", "--agent-id", "executioner", "--transport", "stdio")
    table = codex_table(stdio)
    assert table["args"] == ["mcp", "--url", stack.url] and table["env_vars"] == ["BRIDGE_TOKEN"]
    assert Path(table["command"]).name == "bridge"


def test_config_json_with_a_token_file_runs_as_printed(stack: Stack, tmp_path: Path) -> None:
    path = token_file(stack, tmp_path, "rev")
    doc = json.loads(config(stack, "--client", "json", "--agent-id", "rev", "--transport", "stdio",
                            "--token-file", str(path)))
    assert "token" not in doc and doc["token_file"] == str(path) and doc["env"] == {}
    assert doc["url"] == f"{stack.url}/mcp"
    server = StdioServer([doc["command"], *doc["args"]], tmp_path / "stderr.log")
    try:
        assert server.ask(initialize())["result"]["protocolVersion"] == "2025-06-18"
        tools = server.ask({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})["result"]["tools"]
        assert {t["name"] for t in tools} >= TOOLS
        assert server.close_stdin() == 0
    finally:
        server.stop()

    http = json.loads(config(stack, "--client", "json", "--agent-id", "rev"))
    assert http["header"] == "Authorization: Bearer ${BRIDGE_TOKEN}" and http["token_env"] == "BRIDGE_TOKEN"
    assert inbox_status(stack, http["token"]) == 200
    referred = config(stack, "--client", "claude", "--agent-id", "rev", "--token-file", str(path))
    assert f'export BRIDGE_TOKEN="$(cat {path})"' in referred.splitlines()
    assert "eyJ" not in referred  # nothing minted, nothing embedded
    named = config(stack, "--client", "codex", "--agent-id", "rev", "--token-env", "REV_TOKEN")
    assert not [line for line in named.splitlines() if line.startswith("export")]
    assert codex_table(named)["bearer_token_env_var"] == "REV_TOKEN"


def test_config_refuses_bad_input(stack: Stack) -> None:
    both = stack.bridge("mcp", "config", "--client", "claude", "--agent-id", "rev", "--db", str(stack.db),
                         "--token-file", "f", "--token-env", "X")
    assert both.returncode == 2 and "at most one" in both.stderr and both.stdout == ""
    long_ttl = stack.bridge("mcp", "config", "--client", "claude", "--agent-id", "rev", "--db", str(stack.db),
                             "--ttl", "48h")
    assert long_ttl.returncode == 2 and "--ttl" in long_ttl.stderr
    bad_url = stack.bridge("mcp", "config", "--client", "codex", "--agent-id", "rev", "--db", str(stack.db),
                            "--url", "localhost:8765")
    assert bad_url.returncode == 2 and "--url" in bad_url.stderr
    misplaced = stack.bridge("mcp", "--url", stack.url, "config", "--client", "json", "--agent-id", "r")
    assert misplaced.returncode == 2 and "after `config`" in misplaced.stderr
