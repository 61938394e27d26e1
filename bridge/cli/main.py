"""The `bridge` command line: the service, tokens and operator controls over the same services."""

from __future__ import annotations

import click

import bridge as bridge_pkg
from bridge.cli import operator
from bridge.cli.agents import agent
from bridge.cli.control import freeze, unfreeze
from bridge.cli.db import db, doctor
from bridge.cli.demo import demo
from bridge.cli.mcp import mcp
from bridge.cli.serve import serve, worker
from bridge.cli.token import token
from bridge.cli.wake import force_trigger, runtime, trigger_retry, triggers
from ops.cli import ops


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(bridge_pkg.__version__, prog_name="bridge")
def cli() -> None:
    """Local coordination bridge for AI coding-agent sessions."""


cli.add_command(serve)
cli.add_command(worker)
cli.add_command(token)
cli.add_command(freeze)
cli.add_command(unfreeze)
for command in (agent, demo, mcp, ops, db, doctor, runtime, triggers, trigger_retry, force_trigger, *operator.COMMANDS):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bridge")
