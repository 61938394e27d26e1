"""A click group that imports each command only when it runs (or shows its own help).

Its commands come from a table (`name -> Entry`: where the command lives, its help heading, its one line in the
group's help) and, for the top-level `bridge` group, from the `bridge.commands` entry points other installed packages
declare (the ops wing is one): the product finds them there and never imports them by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any, NamedTuple

import click

from bridge.cli.options import FULL

PLUGIN_GROUP = "bridge.commands"
PLUGIN_SECTION = "ops"  # heading of the commands installed through PLUGIN_GROUP


class Entry(NamedTuple):
    """A command in a lazy table: `module:attribute` of its click command, its help heading, and its one line there
    (the first sentence of the command's own help; tests/test_cli_startup.py keeps the two equal)."""

    target: str
    section: str
    help: str


def section(heading: str, *rows: tuple[str, str, str]) -> dict[str, Entry]:
    """Table rows `(name, target, help)` under one heading."""
    return {name: Entry(target, heading, text) for name, target, text in rows}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use from `table` (and, with `plugins=True`, from the
    `bridge.commands` entry points); its help lists them under their headings, importing only plugin groups."""

    def __init__(self, *args: Any, table: Mapping[str, Entry], plugins: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = dict(table)
        self.use_plugins = plugins

    @cached_property
    def plugins(self) -> dict[str, EntryPoint]:
        """Installed `bridge.commands` entry points not shadowed by the table (read once, only when needed)."""
        if not self.use_plugins:
            return {}
        return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in self.table}

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = {*self.table, *self.plugins}
        return [*self.table, *sorted(self.plugins), *sorted(set(self.commands) - known)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in self.table:
                module, _, attribute = self.table[cmd_name].target.partition(":")
                self.commands[cmd_name] = getattr(importlib.import_module(module), attribute)
            elif cmd_name in self.plugins:
                self.commands[cmd_name] = self.plugins[cmd_name].load()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            entry = self.table.get(name)
            if entry is not None:
                sections.setdefault(entry.section, []).append((name, entry.help))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                heading = PLUGIN_SECTION if name in self.plugins else "other"
                sections.setdefault(heading, []).append((name, command.get_short_help_str(FULL)))
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        for heading, rows in sections.items():  # one name column for every heading
            with formatter.section(f"{heading.capitalize()} commands"):
                formatter.write_dl([(name.ljust(width), text) for name, text in rows], col_max=width)
