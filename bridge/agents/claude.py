"""The Claude Code runtime profile: its MCP config, first-run state, argv templates and environment.

Claude Code takes the session id at launch (`--session-id <uuid>`), so the bridge chooses it. Options are written
`--name=value`: `--mcp-config` and `--allowedTools` are variadic and would otherwise swallow the positional prompt.
Only the bridge's tools are pre-approved (`mcp__bridge` = every tool of the `bridge` server).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bridge.agents.base import AgentPlan, AgentSpec, find_cli, write_private

SERVER_NAME = "bridge"  # tools appear to the model as mcp__bridge__<tool>
MCP_CONFIG_FILE = "claude-mcp.json"
DELIVERY = "keys"  # send-keys -l, then Enter as its own tmux command (text+Enter in one command is a paste)
ENTER_DELAY = 0.2  # seconds; measured: 0, 0.1, 0.2 and 0.5 all submit (also under CPU load); 0.2 is margin


def mcp_config(spec: AgentSpec) -> dict[str, Any]:
    """The `--mcp-config` document: the bridge as a Streamable HTTP server with the agent's bearer token.

    `alwaysLoad` keeps the bridge tools in every request (never deferred behind ToolSearch) and makes startup wait
    for the connection (≤5 s), so a first prompt given on the command line already has them.
    """
    return {"mcpServers": {SERVER_NAME: {"type": "http", "url": spec.mcp_url, "alwaysLoad": True,
                                         "headers": {"Authorization": f"Bearer {spec.token}"}}}}


def seed_home(home: Path, cwd: Path, api_key: str | None) -> None:
    """Pre-seed `~/.claude.json` so no onboarding, trust or custom-API-key screen appears (other keys are kept)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / ".claude.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict):
        state = {}
    state["hasCompletedOnboarding"] = True
    projects = state.setdefault("projects", {})
    for folder in {str(cwd), str(cwd.resolve())}:
        projects.setdefault(folder, {})["hasTrustDialogAccepted"] = True
    if api_key:
        responses = state.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})
        approved = responses.setdefault("approved", [])
        if api_key[-20:] not in approved:
            approved.append(api_key[-20:])
    write_private(path, json.dumps(state, indent=2))


def sessions_dir(home: Path, cwd: Path) -> Path:
    """Where Claude Code stores this cwd's transcripts (`<session_id>.jsonl`)."""
    return home / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(cwd.resolve()))


def agent_env(spec: AgentSpec) -> dict[str, str]:
    """The agent's own variables: HOME, the model endpoint and key, no non-essential traffic or plugin installs."""
    env = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1"}
    if spec.home is not None:
        env["HOME"] = str(spec.home)
    if spec.model_url:
        env["ANTHROPIC_BASE_URL"] = spec.model_url
    if spec.api_key:
        env["ANTHROPIC_API_KEY"] = spec.api_key
    return env


def prepare(spec: AgentSpec) -> AgentPlan:
    """Write the agent's configuration into spec.agent_dir (and spec.home) and return how to run it."""
    spec.agent_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = spec.agent_dir / MCP_CONFIG_FILE
    write_private(config, json.dumps(mcp_config(spec), indent=2))
    if spec.home is not None:
        seed_home(spec.home, spec.cwd, spec.api_key)
    common = [f"--mcp-config={config}", "--strict-mcp-config", f"--allowedTools=mcp__{SERVER_NAME}"]
    claude = find_cli("claude")
    home = spec.home or Path.home()
    return AgentPlan(
        env=agent_env(spec),
        launch=[claude, "--session-id", "{session_id}", *common],
        resume=[claude, "-p", "--resume", "{session_id}", *common, "--", "{prompt}"],
        spawn=[claude, "--session-id", "{session_id}", *common, "--", "{prompt}"],
        delivery=DELIVERY,
        enter_delay=ENTER_DELAY,
        chooses_session_id=True,
        extra={"mcp_config": str(config), "sessions_dir": str(sessions_dir(home, spec.cwd))},
    )


def discover_session_id(plan: AgentPlan, since: float) -> str | None:
    """Always None: Claude Code takes the bridge's UUID at launch, there is nothing to discover."""
    return None
