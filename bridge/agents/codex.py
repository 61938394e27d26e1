"""The Codex CLI runtime profile: a private CODEX_HOME with the bridge as MCP server, and the argv to run it.

`prepare(spec)` writes `<agent_dir>/codex-home/config.toml` (0600, dir 0700): approval `never`, sandbox
`workspace-write`, the agent's cwd trusted (no trust prompt), `[features] daemon_auto_start = false` (no app-server
daemon), and `[mcp_servers.bridge]` with the bridge URL, the agent's token as an `Authorization` header (only in the
0600 file: not in argv, not in the environment Codex hands to shell commands) and `default_tools_approval_mode =
"approve"`. With `spec.model_url` it selects a Responses-API provider at that URL (the fake OpenAI) whose key is in
`$AGENT_MODEL_API_KEY`; without it Codex uses OpenAI and the user's `~/.codex/auth.json` is copied in. Codex
itself later adds `[tui]` keys to this file.

Session ids (Codex has no flag to choose one, so `chooses_session_id` is False). The caller must:
- launch: note `since = time.time()`, start `plan.launch` in a tmux pane (ready in ~0.5 s: the composer shows
  "Ask Codex"), deliver the first trigger, then poll `discover_session_id(plan, since)` (~1 s) and register the id.
  The TUI picks its id at start but writes the session file (`sessions/YYYY/MM/DD/rollout-…-<uuid>.jsonl`) only
  when the first prompt is submitted; until then there is nothing to resume.
- spawn: the same with `plan.spawn` (its first prompt is on the command line; the file appears within ~1 s).
- resume: fill `plan.resume` only with a UUID (the worker checks `wake.trusted_session_id`): `codex exec resume` takes a
  non-UUID as a session *name* and silently starts a NEW session (exit 0); an unknown UUID exits 1. Run it in
  `spec.cwd` with stdin from /dev/null (an open stdin pipe makes `codex exec` wait for EOF). It appends to the same
  session file and prints `session id: <uuid>`.

Delivery: "paste" (tmux `paste-buffer -p`, then a separate Enter). Typed keys (`send-keys -l`) need the Enter
>= 0.2 s later and still fail for lines over ~1000 characters (the Enter is swallowed); a bracketed paste submits
at any delay and length. A trigger delivered while a turn runs is queued by Codex and read after the next tool call.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

from bridge.agents.base import AgentPlan, AgentSpec, find_cli, write_private

HOME_DIR = "codex-home"
PROVIDER = "bridge_model"  # the [model_providers.x] entry used when spec.model_url is set
KEY_ENV = "AGENT_MODEL_API_KEY"  # that provider's env_key
MODEL = "bridge-fake"
UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ROLLOUT = re.compile(rf"rollout-.*-({UUID})\.jsonl$")


def codex_home(spec: AgentSpec) -> Path:
    """The agent's private CODEX_HOME."""
    return spec.agent_dir / HOME_DIR


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML; DEL is the one control character JSON leaves as is)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def config_toml(spec: AgentSpec) -> str:
    """The agent's config.toml."""
    lines: list[str] = []
    if spec.model_url is not None:
        lines += [f"model = {_toml(MODEL)}", f"model_provider = {_toml(PROVIDER)}"]
    lines += [
        'approval_policy = "never"',
        'sandbox_mode = "workspace-write"',
        "check_for_update_on_startup = false",
        "",
        "[features]",
        "daemon_auto_start = false",
        "",
    ]
    if spec.model_url is not None:
        lines += [
            f"[model_providers.{PROVIDER}]",
            'name = "bridge model"',
            f"base_url = {_toml(spec.model_url)}",
            'wire_api = "responses"',
            f"env_key = {_toml(KEY_ENV)}",
            "",
        ]
    lines += [
        "[mcp_servers.bridge]",
        f"url = {_toml(spec.mcp_url)}",
        f"http_headers = {{ Authorization = {_toml('Bearer ' + spec.token)} }}",
        'default_tools_approval_mode = "approve"',
        "",
        f"[projects.{_toml(str(spec.cwd))}]",
        'trust_level = "trusted"',
    ]
    return "\n".join(lines) + "\n"


def _user_auth_file() -> Path:
    """The user's own Codex login (`$CODEX_HOME/auth.json`, else `~/.codex/auth.json`)."""
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "auth.json"


def prepare(spec: AgentSpec) -> AgentPlan:
    """Write the agent's CODEX_HOME and return how to launch, resume and spawn it."""
    home = codex_home(spec)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    write_private(home / "config.toml", config_toml(spec))
    auth = _user_auth_file()
    if spec.model_url is None and auth.is_file() and auth.resolve() != (home / "auth.json").resolve():
        write_private(home / "auth.json", auth.read_bytes())
    codex = find_cli("codex")
    env = {"CODEX_HOME": str(home)}
    if spec.home is not None:
        env["HOME"] = str(spec.home)
    if spec.model_url is not None:
        env[KEY_ENV] = spec.api_key or "bridge-fake-key"
    return AgentPlan(
        env=env,
        launch=[codex, "--no-daemon"],
        resume=[codex, "exec", "resume", "--skip-git-repo-check", "--", "{session_id}", "{prompt}"],
        spawn=[codex, "--no-daemon", "--", "{prompt}"],
        delivery="paste",
        enter_delay=0.3,
        chooses_session_id=False,
        extra={"codex_home": str(home), "sessions_dir": str(home / "sessions")},
    )


def _session_start(path: Path, since: float) -> float | None:
    """When the top-level session in a rollout file started (its `session_meta` line), as unix time; None for files
    untouched since `since`, unreadable ones and sub-agent threads (their `source` is an object, not "cli")."""
    try:
        if path.stat().st_mtime < since:
            return None
        with path.open(encoding="utf-8") as f:
            meta = json.loads(f.readline())["payload"]
        if not isinstance(meta.get("source", "cli"), str):
            return None
        return datetime.fromisoformat(meta["timestamp"].replace("Z", "+00:00")).timestamp()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def discover_session_id(plan: AgentPlan, since: float) -> str | None:
    """The newest session of this agent's CODEX_HOME that started at or after `since` (unix time), or None."""
    found: list[tuple[float, str]] = []
    for path in Path(plan.extra["sessions_dir"]).glob("*/*/*/rollout-*.jsonl"):
        match = ROLLOUT.search(path.name)
        started = _session_start(path, since) if match else None
        if match and started is not None and started >= since:
            found.append((started, match.group(1)))
    return max(found)[1] if found else None
