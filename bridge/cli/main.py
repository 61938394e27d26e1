"""The `bridge` command line: the service, tokens and operator controls over the same services.

Each command is imported only when it runs (or shows its own help): the table below says where it lives and what
`bridge --help` says about it, so `bridge --version` and `bridge --help` start without the HTTP app, the MCP SDK or
pydantic. The ops wing (`bridge ops ...`) is not named here: its package declares it as a `bridge.commands` entry
point, which `bridge --help` reads."""

from __future__ import annotations

import click

import bridge as bridge_pkg
from bridge.cli.lazy import Entry, LazyGroup, section

COMMANDS: dict[str, Entry] = {
    **section(
        "service",
        ("serve", "bridge.cli.serve:serve",
         "Run the HTTP API on 127.0.0.1:8765 (and the worker) with zero configuration."),
        ("worker", "bridge.cli.serve:worker",
         "Run the supervisor worker alone (wakes agents; several processes may share the database)."),
        ("token", "bridge.cli.token:token", "Issue, revoke and publish the keys of bearer tokens."),
        ("mcp", "bridge.cli.mcp:mcp",
         "An MCP server on stdin/stdout that forwards every message to a running bridge's POST /mcp."),
        ("doctor", "bridge.cli.db:doctor",
         "Preflight: Python, dependencies, tmux, database, key file permissions, port."),
        ("demo", "bridge.cli.demo:demo",
         "Watch agents hand work to each other through the bridge, with no human relay."),
    ),
    **section(
        "agents and wake",
        ("agent", "bridge.cli.agents:agent",
         "Put a real agent (Claude Code, Codex) on the bridge, or take it off."),
        ("runtime", "bridge.cli.wake:runtime", "The runtime registry: which session each agent runs, and where."),
        ("triggers", "bridge.cli.wake:triggers",
         "Trigger jobs, newest first: status, why a job failed or waits, and its last attempt (--json: every "
         "attempt)."),
        ("trigger-retry", "bridge.cli.wake:trigger_retry", "Put a dead-lettered trigger back in line."),
        ("force-trigger", "bridge.cli.wake:force_trigger",
         "Trigger an agent now, skipping the human-activity quiet window."),
    ),
    **section(
        "operator",
        ("threads", "bridge.cli.operator:threads", "List threads (oldest update first)."),
        ("inspect-thread", "bridge.cli.operator:inspect_thread",
         "Thread, participants with cursors and unread, escalation, recent messages, triggers and audit "
         "(read-only)."),
        ("escalate-thread", "bridge.cli.operator:escalate_thread", "Block a thread and open an escalation record."),
        ("assign-escalation-owner", "bridge.cli.operator:assign_escalation_owner",
         "Give a blocked thread's escalation its first owner (CONFLICT if it has one)."),
        ("reassign-escalation-owner", "bridge.cli.operator:reassign_escalation_owner",
         "Hand a blocked thread's escalation to another owner (CONFLICT if none)."),
        ("get-escalation-owner", "bridge.cli.operator:get_escalation_owner", "Show the escalation owner of a thread."),
        ("unblock-thread", "bridge.cli.operator:unblock_thread",
         "Unblock a blocked thread (the owner rule applies: be the owner or start the reason with human_override:)."),
        ("override-close-thread", "bridge.cli.operator:override_close_thread",
         "Close a thread whatever its state or owner (reason must start with human_override:)."),
        ("audit", "bridge.cli.operator:audit", "The newest audit events (append-only trail)."),
        ("freeze", "bridge.cli.control:freeze",
         "Refuse create_thread (or, with --all, every write) with UNAVAILABLE; reads keep working."),
        ("unfreeze", "bridge.cli.control:unfreeze", "Lift a write freeze."),
    ),
    **section(
        "database",
        ("db", "bridge.cli.db:db", "Database maintenance (works with the server running)."),
    ),
}


@click.group(cls=LazyGroup, table=COMMANDS, plugins=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(bridge_pkg.__version__, prog_name="bridge")
def cli() -> None:
    """Local coordination bridge for AI coding-agent sessions."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bridge")
