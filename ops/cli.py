"""`bridge ops ...`: drills, the SLI harness and the go-live readiness check."""

from __future__ import annotations

import click

from ops.drills.cli import drill
from ops.readiness import readiness
from ops.sli import sli


@click.group()
def ops() -> None:
    """Ops tooling: runbook drills, SLI measurements, launch readiness."""


ops.add_command(drill)
ops.add_command(sli)
ops.add_command(readiness)
