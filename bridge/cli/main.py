"""The `bridge` command line: the service, tokens and operator controls over the same services.

Each command is imported only when it runs (or shows its own help): the table below says where it lives and what
`bridge --help` says about it, so `bridge --version` and `bridge --help` start without the HTTP app, the MCP SDK,
pydantic or the ops tooling."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click

import bridge as bridge_pkg
from bridge.cli.options import FULL


class Entry(NamedTuple):
    """A top-level command: `module:attribute` of its click command, its `bridge --help` heading, and its one line
    there (the first sentence of the command's own help; tests/test_cli_startup.py keeps the two equal)."""

    target: str
    section: str
    help: str


def _section(section: str, *rows: tuple[str, str, str]) -> dict[str, Entry]:
    return {name: Entry(target, section, text) for name, target, text in rows}


COMMANDS: dict[str, Entry] = {
    **_section(
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
    **_section(
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
    **_section(
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
    **_section(
        "database",
        ("db", "bridge.cli.db:db", "Database maintenance (works with the server running)."),
    ),
    **_section(
        "ops",
        ("ops", "ops.cli:ops", "Ops tooling: runbook drills, SLI measurements, launch readiness."),
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use from a table of `name -> Entry`; its help lists them from
    the table, under their headings, without importing any."""

    def __init__(self, *args: Any, table: Mapping[str, Entry], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = dict(table)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.table, *sorted(set(self.commands) - set(self.table))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.table:
            module, _, attribute = self.table[cmd_name].target.partition(":")
            self.commands[cmd_name] = getattr(importlib.import_module(module), attribute)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            entry = self.table.get(name)
            if entry is not None:
                sections.setdefault(entry.section, []).append((name, entry.help))
            elif not self.commands[name].hidden:
                sections.setdefault("other", []).append((name, self.commands[name].get_short_help_str(FULL)))
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        for section, rows in sections.items():  # one name column for every heading
            with formatter.section(f"{section.capitalize()} commands"):
                formatter.write_dl([(name.ljust(width), text) for name, text in rows], col_max=width)


@click.group(cls=LazyGroup, table=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(bridge_pkg.__version__, prog_name="bridge")
def cli() -> None:
    """Local coordination bridge for AI coding-agent sessions."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bridge")
