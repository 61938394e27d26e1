"""Options the operator commands share, defined once so one idea has one flag and one rule everywhere.

- `--reason` is required on every command that changes something as an operator (it is kept in the audit trail).
- `--actor` names the operator (default `human:<os user>`).
- `--limit` takes 1..200 rows on every listing command: the API's page cap (`bridge.domain.models.MAX_LIMIT`).
- `--url` is where the bridge listens, for what an agent is given (`--url`, else `$BRIDGE_URL`, else the address
  `bridge serve` binds from the same settings: BRIDGE_HOST/BRIDGE_PORT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

FULL = 10_000  # a short-help limit no one-line description reaches: help never cuts a line with "..."
LIMIT_MIN = 1
LIMIT_MAX = 200  # = bridge.domain.models.MAX_LIMIT (not imported: pydantic is slow to import for every command)
DEFAULT_LIMIT = 50

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def reason_option(help_text: str = "Why (kept in the audit trail).") -> Decorator:
    """`--reason`, required: every operator mutation says why."""
    return click.option("--reason", required=True, help=help_text)


REASON = reason_option()
ACTOR = click.option("--actor", default=None, help="Operator identity (default human:<os user>).")
LIMIT = click.option("--limit", type=click.IntRange(LIMIT_MIN, LIMIT_MAX), default=DEFAULT_LIMIT, show_default=True,
                     help="At most this many rows.")
URL = click.option("--url", default=None,
                   help="The bridge's base URL the agent calls [env BRIDGE_URL; default: the address `bridge serve` "
                        "binds, from BRIDGE_HOST/BRIDGE_PORT].")


class FullHelpGroup(click.Group):
    """A command group whose help lists each subcommand with its whole one-line description (click cuts them to
    the terminal's width with "...")."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(FULL)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
