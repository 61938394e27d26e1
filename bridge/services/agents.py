"""`bridge agent up|down`: put a real Claude Code or Codex session on the bridge, and take it off again.

Up mints the agent's token, writes its own MCP configuration (bridge tools pre-approved, and only those) into a
private folder next to the database, starts its TUI in the workspace's tmux session with a session id the bridge
knows, and registers the runtime profile, so typed wake, resume of its own session and spawn all work for it.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from pathlib import Path
from typing import Any

from bridge import agents
from bridge.agents.base import AgentPlan, AgentSpec
from bridge.auth.keys import SigningKey
from bridge.auth.tokens import issue_token
from bridge.domain.templates import render
from bridge.errors import Conflict
from bridge.services import runtimes as runtime_service
from bridge.services import tokens as token_service
from bridge.services.core import Bridge, Call
from bridge.services.panes import Panes
from bridge.store import control as control_store


def agent_dir(bridge: Bridge, agent_id: str) -> Path:
    """The agent's private configuration folder (0700) next to the database."""
    return bridge.settings.data_dir / "agents" / agent_id


def up(bridge: Bridge, call: Call, tmux: Panes, key: SigningKey, *, kind: str, agent_id: str, role: str, cwd: Path,
       url: str, ttl: float, model_url: str | None = None, api_key: str | None = None, home: Path | None = None,
       tmux_session: str | None = None) -> dict[str, Any]:
    """Mint, configure, launch and register one agent; return where it runs (CONFLICT if it already runs)."""
    current = bridge.store.read(lambda conn: control_store.get_session(conn, bridge.workspace, agent_id))
    if current is not None and current["management_mode"] == "managed" and current["tmux_target"]:
        pane = runtime_service.probe(tmux, current["tmux_target"])
        if pane is not None and not pane.dead:
            raise Conflict(f"agent {agent_id} already runs in pane {current['tmux_target']}: "
                           "`bridge agent down` it first", {"agent_id": agent_id,
                                                             "tmux_target": current["tmux_target"]})
    token, claims = issue_token(key, issuer=bridge.settings.issuer, audience=bridge.settings.audience,
                                agent_id=agent_id, role=role, workspace_id=bridge.workspace, ttl=ttl)
    folder = agent_dir(bridge, agent_id)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    spec = AgentSpec(agent_id=agent_id, agent_dir=folder, cwd=cwd.resolve(), mcp_url=f"{url.rstrip('/')}/mcp",
                     token=token, model_url=model_url, api_key=api_key, home=home)
    plan = agents.prepare(kind, spec)
    # a runtime that names its own sessions (Codex) does so at its first prompt: the worker learns the id from
    # sessions started after `launched_at` once the agent has acted on a wake; until then there is nothing to resume
    plan = dataclasses.replace(plan, extra={**plan.extra, "token_session_id": claims["session_id"],
                                            "launched_at": f"{time.time():.3f}"})
    session_id = str(uuid.uuid4()) if plan.chooses_session_id else ""
    argv = render(plan.launch, {"session_id": session_id, "agent_id": agent_id})
    out = runtime_service.launch(
        bridge, call, tmux, agent_id=agent_id, kind=kind, argv=argv, session_id=session_id or f"{agent_id}-pending",
        tmux_session=tmux_session, cwd=str(spec.cwd), resumable=bool(session_id), profile=plan, url=url)
    socket = f"-L {tmux.socket_name} " if tmux.socket_name else ""
    return {**out, "runtime": kind, "role": role, "agent_dir": str(folder),
            "token_session_id": claims["session_id"], "attach": f"tmux {socket}attach -t {out['tmux_session']}"}


def down(bridge: Bridge, call: Call, tmux: Panes, agent_id: str, reason: str) -> dict[str, Any]:
    """Stop the agent's pane, mark it offline and revoke the token `up` gave it."""
    session = bridge.store.read(lambda conn: control_store.get_session(conn, bridge.workspace, agent_id))
    out = runtime_service.stop(bridge, call, tmux, agent_id, reason)
    plan = AgentPlan.of(session)
    token_session = plan.extra.get("token_session_id") if plan else None
    if token_session:
        token_service.revoke(bridge, call, "session", token_session, reason)
    return {**out, "revoked_token_session": token_session}
