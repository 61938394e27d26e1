"""One renderer for every command: stable JSON with `--json`, aligned text for people; errors to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from bridge.errors import BridgeError


def emit(value: Any, as_json: bool, text: str | None = None) -> None:
    """Print a result: JSON document, or `text` (default: key/value lines)."""
    if as_json:
        click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
    elif text is not None:
        click.echo(text)
    elif isinstance(value, dict):
        width = max((len(k) for k in value), default=0)
        for key, item in value.items():
            click.echo(f"{key.ljust(width)}  {item if not isinstance(item, dict | list) else json.dumps(item)}")
    else:
        click.echo(str(value))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Aligned text table."""
    cells = [[str(c) for c in columns]] + [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def trigger_table(jobs: Sequence[dict[str, Any]], with_thread: bool = False) -> str:
    """Trigger jobs for people: status, result code, the last attempt (stage/outcome, when) and why a job failed or
    waits (its last error, else its defer reason, else the last attempt's detail)."""
    rows = []
    for job in jobs:
        last = (job.get("attempts") or [None])[-1]
        why = job.get("last_error") or job.get("defer_reason") or (last or {}).get("detail") or ""
        rows.append({**job, "last_attempt": f"{last['stage']}/{last['outcome']} {last['at']}" if last else None,
                     "why": " ".join(str(why).split())[:120]})
    columns = ["trigger_id", *(["thread_id"] if with_thread else []), "target_agent_id", "status", "origin",
               "result_code", "deliveries", "created_at", "last_attempt", "why"]
    return table(rows, columns)


def fail(error: BridgeError, as_json: bool) -> None:
    """Report an error on stderr and exit with its CLI exit code."""
    if as_json:
        click.echo(json.dumps({"error": {"code": error.code, "message": error.message, "details": error.details}}),
                   err=True)
    else:
        click.echo(f"error: {error.code}: {error.message}", err=True)
    sys.exit(error.exit_code)
