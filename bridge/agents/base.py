"""What every runtime profile (Claude Code, Codex) produces for one agent, and where the CLIs are found."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLI_DIR_ENV = "BRIDGE_AGENT_CLIS"  # a folder holding the `claude` / `codex` executables (e.g. node_modules/.bin)
_REPO_CLIS = Path(__file__).resolve().parents[2] / "scripts" / "agent-clis" / "node_modules" / ".bin"


@dataclass(frozen=True)
class AgentSpec:
    """One agent to put on the bridge."""

    agent_id: str
    agent_dir: Path  # private folder (0700) for this agent's configuration files
    cwd: Path  # the agent's working directory (recorded at launch; resume must run there)
    mcp_url: str  # the bridge's MCP endpoint, e.g. http://127.0.0.1:8765/mcp
    token: str  # the agent's own bridge token
    model_url: str | None = None  # a model API base URL to use instead of the vendor's (the fake models), or None
    api_key: str | None = None  # the key for model_url
    home: Path | None = None  # HOME for the agent's commands; None keeps the user's own


@dataclass(frozen=True)
class AgentPlan:
    """How the bridge runs one agent: argv templates ({session_id}, {prompt}) and the agent's own environment."""

    env: dict[str, str]  # on top of a minimal base (PATH, LANG, TERM, USER…); never the bridge's own variables
    launch: list[str]  # the interactive TUI, started in a tmux pane
    resume: list[str]  # headless: continue the runtime's own session {session_id} with {prompt}, then exit
    spawn: list[str]  # a fresh interactive session whose first prompt is {prompt}, started in a new tmux window
    delivery: str = "keys"  # how a trigger is typed: "keys" (send-keys -l) or "paste" (bracketed paste)
    enter_delay: float = 0.5  # seconds between the text and its Enter (TUIs read one burst as a paste)
    chooses_session_id: bool = True  # True: {session_id} is a UUID the bridge generates and passes at launch/spawn
    extra: dict[str, str] = field(default_factory=dict)  # runtime-specific facts (e.g. where sessions are stored)

    def to_json(self) -> str:
        """The profile as stored in the runtime registry."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AgentPlan:
        """A profile read back from the registry (unknown keys ignored, so older bridges' rows still load)."""
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def of(cls, session: Mapping[str, Any] | None) -> AgentPlan | None:
        """The profile a runtime registry entry was launched with (`bridge agent up`), or None."""
        return cls.from_json(session["profile"]) if session and session["profile"] else None


def find_cli(name: str) -> str:
    """The executable for `name`: $BRIDGE_AGENT_CLIS, then PATH, then the repository's pinned npm install."""
    folder = os.environ.get(CLI_DIR_ENV)
    for candidate in ([Path(folder) / name] if folder else []):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    if os.access(_REPO_CLIS / name, os.X_OK):
        return str(_REPO_CLIS / name)
    raise FileNotFoundError(f"{name!r} not found: install it (npm) or set {CLI_DIR_ENV} to the folder holding it")


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file readable only by its owner (0600, never readable by others in between), replacing any
    previous one atomically: agents' configuration files hold their tokens."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
