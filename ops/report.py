"""How the ops commands hand over a report: the table (or the JSON with `--json`) on stdout, the JSON in `--out`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def publish(report: dict[str, Any], table: str, *, as_json: bool, out: str | None) -> None:
    """Print `table` (or the report as JSON), and write the JSON report to `out` when given."""
    text = json.dumps(report, indent=2, default=str)
    click.echo(text if as_json else table)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
        click.echo(f"report written to {out}", err=True)
