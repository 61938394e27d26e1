"""`bridge ops ...`: drills, the SLI harness and the go-live readiness check."""

from __future__ import annotations

import click


@click.group()
def ops() -> None:
    """Ops tooling: runbook drills, SLI measurements, launch readiness."""
