"""`bridge agent up|down`: a real Claude Code or Codex session on the bridge in one command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bridge.cli.common import (
    check_identifier,
    db_options,
    load_settings,
    opened,
    operator_call,
    require_tmux,
    token_lifetime,
)
from bridge.cli.options import ACTOR, REASON, URL, FullHelpGroup
from bridge.cli.output import emit, fail
from bridge.cli.urls import bridge_url
from bridge.domain.vocabulary import Role
from bridge.errors import InvalidArgument
from bridge.services import agents as agent_service
from bridge.worker.tmux import Tmux


@click.group(cls=FullHelpGroup)
def agent() -> None:
    """Put a real agent (Claude Code, Codex) on the bridge, or take it off."""


@agent.command("up")
@click.option("--runtime", "kind", type=click.Choice(["claude", "codex"]), required=True, help="The agent CLI.")
@click.option("--agent-id", required=True, help="The agent's identity on the bridge.")
@click.option("--role", type=click.Choice([Role.PARTICIPANT.value, Role.COORDINATOR.value]),
              default=Role.PARTICIPANT.value, show_default=True)
@click.option("--cwd", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="The agent's working directory (resume runs there too).  [default: .]")
@URL
@click.option("--ttl", help="The agent token's lifetime (default: the max TTL, BRIDGE_TOKEN_MAX_TTL: an agent's "
                             "session outlives a work day).")
@click.option("--model-url", default=None, help="A model API base URL instead of the vendor's (e.g. a local fake).")
@click.option("--api-key-env", default=None, help="Read the key for --model-url from this environment variable.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="HOME for the agent (default: yours, so your CLI login is used).")
@click.option("--tmux-session", default=None, help="tmux session (default bridge-<workspace>).")
@click.option("--tmux-socket", default=None, help="tmux server socket name (-L) [env BRIDGE_TMUX_SOCKET].")
@ACTOR
@db_options
def up(kind: str, agent_id: str, role: str, cwd: Path, url: str | None, ttl: str | None, model_url: str | None,
       api_key_env: str | None, home: Path | None, tmux_session: str | None, tmux_socket: str | None,
       actor: str | None, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Mint the agent's token, write its MCP configuration (bridge tools pre-approved), start its TUI in tmux with a
    session id the bridge knows, and register it, so wake, resume and spawn all work for it."""
    settings = load_settings(db=db, workspace=workspace, tmux_socket=tmux_socket)
    check_identifier("agent-id", agent_id, as_json)
    where = bridge_url(url, as_json, settings.url)
    lifetime = token_lifetime(ttl, settings, as_json) if ttl else settings.token_max_ttl
    if not cwd.is_dir():
        fail(InvalidArgument(f"--cwd {cwd} is not a directory"), as_json)
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            fail(InvalidArgument(f"--api-key-env: ${api_key_env} is not set"), as_json)
    require_tmux(as_json)
    tmux = Tmux(settings.tmux_socket)
    with opened(settings, as_json) as parts:
        try:
            out = agent_service.up(parts.bridge, operator_call(settings, actor), tmux, parts.key, kind=kind,
                                   agent_id=agent_id, role=role, cwd=cwd, url=where, ttl=lifetime,
                                   model_url=model_url, api_key=api_key, home=home, tmux_session=tmux_session)
        except FileNotFoundError as exc:
            fail(InvalidArgument(str(exc)), as_json)
    emit(out, as_json)


@agent.command("down")
@click.option("--agent-id", required=True)
@REASON
@click.option("--tmux-socket", default=None, help="tmux server socket name (-L) [env BRIDGE_TMUX_SOCKET].")
@ACTOR
@db_options
def down(agent_id: str, reason: str, tmux_socket: str | None, actor: str | None, db: str | None,
         workspace: str | None, as_json: bool) -> None:
    """Stop the agent's pane, mark it offline and revoke the token `agent up` gave it."""
    settings = load_settings(db=db, workspace=workspace, tmux_socket=tmux_socket)
    with opened(settings, as_json) as parts:
        emit(agent_service.down(parts.bridge, operator_call(settings, actor), Tmux(settings.tmux_socket), agent_id,
                                reason), as_json)
