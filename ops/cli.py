"""`bridge ops ...`: drills, the SLI harness and the go-live readiness check."""

from __future__ import annotations

import click

from ops.drills.cli import drill


@click.group()
def ops() -> None:
    """Ops tooling: runbook drills, SLI measurements, launch readiness."""


ops.add_command(drill)
