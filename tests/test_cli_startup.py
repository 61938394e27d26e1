"""The `bridge` command line starts light: a command module is imported only when that command is used.

`bridge --version` and `bridge --help` import no command at all; the help of a light command imports neither the
HTTP app, the MCP SDK nor the pydantic models. `bridge --help` lists every command of the table in `bridge.cli.main`
under its heading, with its whole one-line description, and the ops wing found through its `bridge.commands` entry
point (loading only that group). (How fast this is belongs to benchmarks/test_bench_cli.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import click
import pytest
from bridge_ops.cli import COMMANDS as OPS_COMMANDS
from bridge_ops.cli import ops
from click.testing import CliRunner

from bridge.cli.main import COMMANDS, cli
from bridge.cli.options import FULL

HEAVY_PACKAGES = {"bottle", "waitress", "mcp", "pydantic", "pydantic_core", "prometheus_client"}
HEAVY_MODULES = ("bridge.http", "bridge.domain.models", "bridge.services.commands", "bridge.mcp_stdio")
HEADINGS = ["Service commands", "Agents and wake commands", "Operator commands", "Database commands",
            "Ops commands"]

LOADED = """
import json, sys
from bridge.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="bridge")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*args: str) -> list[str]:
    """The modules a fresh `bridge <args>` process has imported when the command is done."""
    done = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY_PACKAGES or m.startswith(HEAVY_MODULES)]


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_no_command(args):
    modules = loaded_by(*args)
    assert heavy(modules) == []
    light = ("bridge.cli", "bridge.cli.main", "bridge.cli.lazy", "bridge.cli.options")  # the group, click helpers
    assert [m for m in modules if m.startswith("bridge.") and m not in light] == []
    ops_group = ["bridge_ops", "bridge_ops.cli"] if "--help" in args else []  # the help lists the ops group
    assert [m for m in modules if m.startswith("bridge_ops")] == ops_group


@pytest.mark.parametrize("args", [["token", "issue", "--help"], ["threads", "--help"]])
def test_a_light_commands_help_imports_no_http_mcp_or_models(args):
    modules = loaded_by(*args)
    assert heavy(modules) == []
    assert "bridge.cli.token" in modules or "bridge.cli.operator" in modules  # the command itself was loaded


def help_sections(text: str) -> dict[str, dict[str, str]]:
    """`bridge --help`'s command headings: heading -> {command: its description, wrapped lines joined}."""
    sections: dict[str, dict[str, str]] = {}
    rows: dict[str, str] | None = None
    name = ""
    for line in text.splitlines():
        if heading := re.fullmatch(r"(\S.*):", line):
            rows = sections.setdefault(heading.group(1), {})
        elif rows is not None and (row := re.fullmatch(r"  (\S+)\s+(.*)", line)):
            name = row.group(1)
            rows[name] = row.group(2)
        elif rows is not None and line.strip():
            rows[name] += " " + line.strip()
    return sections


def test_help_lists_every_command_under_its_heading_in_full():
    done = subprocess.run([sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, timeout=60,
                          check=True, env={**os.environ, "COLUMNS": "80"})
    sections = help_sections(done.stdout)
    assert [h for h in sections if h != "Options"] == HEADINGS
    listed = {name: (heading, text) for heading, rows in sections.items() if heading != "Options"
              for name, text in rows.items()}
    assert sorted(listed) == sorted([*COMMANDS, "ops"]) == sorted(cli.list_commands(click.Context(cli)))
    for name, entry in COMMANDS.items():
        assert listed[name] == (f"{entry.section.capitalize()} commands", entry.help), name  # whole, no "..."
    assert listed["ops"] == ("Ops commands", ops.get_short_help_str(FULL))


def test_the_ops_wing_is_found_through_its_entry_point():
    """The product CLI never names the ops package: `bridge ops` is the `bridge.commands` entry point's group."""
    from importlib.metadata import entry_points

    assert "ops" not in COMMANDS
    (found,) = [ep for ep in entry_points(group="bridge.commands") if ep.name == "ops"]
    assert found.load() is ops is cli.get_command(click.Context(cli), "ops")


TABLES = [(cli, COMMANDS, name) for name in sorted(COMMANDS)] + [(ops, OPS_COMMANDS, name) for name in OPS_COMMANDS]


@pytest.mark.parametrize(("group", "table", "name"), TABLES, ids=[f"{g.name}-{n}" for g, _, n in TABLES])
def test_each_entry_loads_its_command_and_says_what_its_own_help_says(group, table, name):
    command = group.get_command(click.Context(group), name)
    assert command is not None and command.name == name
    assert command.get_short_help_str(FULL) == table[name].help, (
        f"{group.name} table entry {name!r}: its help must be the first sentence of the command's own help")


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


GROUPS = [name for name in cli.list_commands(click.Context(cli))
          if isinstance(cli.get_command(click.Context(cli), name), click.Group)]


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_lists_its_commands_with_their_whole_one_line_description(group):
    command = cli.get_command(click.Context(cli), group)
    assert isinstance(command, click.Group)
    result = CliRunner().invoke(cli, [group, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = "".join(re.split(r"[Cc]ommands:", result.output, maxsplit=1)[1].split())  # wrapped lines joined
    for name in command.list_commands(click.Context(command)):
        sub = command.get_command(click.Context(command), name)
        if sub is not None and not sub.hidden:
            assert "".join(f"{name} {sub.get_short_help_str(FULL)}".split()) in listing, (group, name, result.output)
