"""`bridge ops ...`: drills, the SLI harness, the go-live readiness check, real-agent wake latency and the
reliability suite."""

from __future__ import annotations

import click

from bridge.cli.options import FullHelpGroup
from ops.agent_wakes import agent_wakes
from ops.drills.cli import drill
from ops.readiness import readiness
from ops.reliability.cli import reliability
from ops.sli import sli


@click.group(cls=FullHelpGroup)
def ops() -> None:
    """Ops tooling: runbook drills, SLI measurements, launch readiness."""


ops.add_command(drill)
ops.add_command(sli)
ops.add_command(readiness)
ops.add_command(agent_wakes)
ops.add_command(reliability)
