"""Operator commands of the wake pipeline: `runtime ...`, `triggers`, `trigger-retry`, `force-trigger`."""

from __future__ import annotations

import secrets

import click

from bridge.cli.common import db_options, load_settings, opened, operator_call, require_tmux
from bridge.cli.options import ACTOR, LIMIT, REASON, URL, FullHelpGroup, reason_option
from bridge.cli.output import emit, table, trigger_table
from bridge.cli.urls import bridge_url
from bridge.services import runtimes as runtime_service
from bridge.services import triggers as trigger_service
from bridge.worker.tmux import Tmux


@click.group(cls=FullHelpGroup)
def runtime() -> None:
    """The runtime registry: which session each agent runs, and where."""


@runtime.command("list")
@db_options
def runtime_list(db: str | None, workspace: str | None, as_json: bool) -> None:
    """Every registered agent runtime (status, tmux target, host, staleness, paused)."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        rows = runtime_service.list_runtimes(parts.bridge)
    emit({"runtimes": rows}, as_json, table(rows, ["agent_id", "kind", "status", "management_mode", "tmux_target",
                                                   "host_id", "paused", "stale", "last_heartbeat_at"]))


def _pause_command(name: str, paused: bool, help_text: str) -> click.Command:
    @runtime.command(name, help=help_text)
    @click.option("--agent-id", required=True)
    @REASON
    @ACTOR
    @db_options
    def command(agent_id: str, reason: str, actor: str | None, db: str | None, workspace: str | None,
                as_json: bool) -> None:
        settings = load_settings(db=db, workspace=workspace)
        with opened(settings, as_json) as parts:
            emit(runtime_service.set_paused(parts.bridge, operator_call(settings, actor), agent_id, paused, reason),
                 as_json)

    return command


_pause_command("pause", True, "Pause an agent's runtime: its triggers wait (RUNTIME_PAUSED) until resumed.")
_pause_command("resume", False, "Resume a paused runtime.")


@runtime.command("launch", context_settings={"ignore_unknown_options": True})
@click.option("--agent-id", required=True, help="The agent the window runs.")
@click.option("--kind", type=click.Choice(["codex", "claude", "generic"]), required=True, help="Runtime adapter.")
@click.option("--tmux-session", default=None, help="tmux session (default bridge-<workspace>).")
@click.option("--tmux-socket", default=None, help="tmux server socket name (-L) [env BRIDGE_TMUX_SOCKET].")
@click.option("--session-id", default=None, help="Session id to register (default generated).")
@click.option("--cwd", default=None, help="Working directory of the command.")
@click.option("--resumable/--not-resumable", default=True, show_default=True)
@URL
@ACTOR
@db_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def runtime_launch(agent_id: str, kind: str, tmux_session: str | None, tmux_socket: str | None,
                   session_id: str | None, cwd: str | None, resumable: bool, url: str | None, actor: str | None,
                   db: str | None, workspace: str | None, as_json: bool, command: tuple[str, ...]) -> None:
    """Start COMMAND (after `--`) in a tmux window named for the agent and register it as managed.

    The window's environment says where the bridge is (BRIDGE_URL, from --url), which agent it runs
    (BRIDGE_AGENT_ID) and in which workspace (BRIDGE_WORKSPACE)."""
    settings = load_settings(db=db, workspace=workspace, tmux_socket=tmux_socket)
    where = bridge_url(url, as_json, settings.url)
    require_tmux(as_json)
    with opened(settings, as_json) as parts:
        emit(runtime_service.launch(
            parts.bridge, operator_call(settings, actor), Tmux(settings.tmux_socket), agent_id=agent_id, kind=kind,
            argv=command, session_id=session_id or f"{agent_id}-{secrets.token_hex(4)}", tmux_session=tmux_session,
            cwd=cwd, resumable=resumable, url=where), as_json)


@runtime.command("stop")
@click.option("--agent-id", required=True)
@REASON
@click.option("--tmux-socket", default=None, help="tmux server socket name (-L) [env BRIDGE_TMUX_SOCKET].")
@ACTOR
@db_options
def runtime_stop(agent_id: str, reason: str, tmux_socket: str | None, actor: str | None, db: str | None,
                 workspace: str | None, as_json: bool) -> None:
    """Kill the agent's managed pane and mark its runtime offline."""
    settings = load_settings(db=db, workspace=workspace, tmux_socket=tmux_socket)
    with opened(settings, as_json) as parts:
        emit(runtime_service.stop(parts.bridge, operator_call(settings, actor), Tmux(settings.tmux_socket),
                                  agent_id, reason), as_json)


@click.command()
@click.option("--dead", is_flag=True, help="Only dead letters (failed jobs).")
@click.option("--thread-id", default=None)
@LIMIT
@db_options
def triggers(dead: bool, thread_id: str | None, limit: int, db: str | None, workspace: str | None,
             as_json: bool) -> None:
    """Trigger jobs, newest first: status, why a job failed or waits, and its last attempt (--json: every attempt)."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        jobs = trigger_service.list_triggers(parts.bridge, dead=dead, thread_id=thread_id, limit=limit)
    emit({"triggers": jobs}, as_json, trigger_table(jobs, with_thread=True))


@click.command("trigger-retry")
@click.option("--trigger-id", required=True)
@REASON
@ACTOR
@db_options
def trigger_retry(trigger_id: str, reason: str, actor: str | None, db: str | None, workspace: str | None,
                  as_json: bool) -> None:
    """Put a dead-lettered trigger back in line."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        emit(trigger_service.retry_dead(parts.bridge, operator_call(settings, actor), trigger_id, reason), as_json)


@click.command("force-trigger")
@click.option("--thread-id", required=True)
@click.option("--agent-id", required=True)
@reason_option("Why the quiet window is skipped (kept in the audit trail).")
@ACTOR
@db_options
def force_trigger(thread_id: str, agent_id: str, reason: str, actor: str | None, db: str | None,
                  workspace: str | None, as_json: bool) -> None:
    """Trigger an agent now, skipping the human-activity quiet window."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        emit(trigger_service.force_trigger(parts.bridge, operator_call(settings, actor), thread_id, agent_id, reason),
             as_json)
