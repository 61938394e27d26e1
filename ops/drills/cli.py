"""`bridge ops drill NAME | --all | --list`: run runbook drills and write their JSON evidence."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import click

from bridge.cli.progress import Progress


@click.command("drill")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every drill.")
@click.option("--list", "list_only", is_flag=True, help="List the drills and the runbook each proves.")
@click.option("--out", default="drill-evidence", show_default=True, help="Directory for the JSON evidence records.")
@click.option("--keep", is_flag=True, help="Keep each drill's temporary directory (logs, database) for inspection.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the list, or every drill's verdict).")
def drill(names: tuple[str, ...], run_all: bool, list_only: bool, out: str, keep: bool, as_json: bool) -> None:
    """Run runbook drills on a real stack in a temporary directory (127.0.0.1 only); exit 1 if one fails.

    Each drill starts `bridge serve` (and whatever else it needs) in a fresh temporary directory with a private
    tmux server, injects its fault for real, follows its runbook's commands, verifies recovery, stops everything it
    started, and writes <out>/<name>.json (timestamps, commands, observations, checks, pass). With --json, stdout
    holds one JSON document and the per-drill lines go to stderr."""
    from bridge_ops.drills import DRILL_MODULES, all_drills, get_drill
    from bridge_ops.drills.framework import run_drill

    if list_only:
        items = all_drills()
        if as_json:
            click.echo(json.dumps({"drills": [{"name": i.name, "runbook": i.runbook, "title": i.title}
                                              for i in items]}, indent=2))
            return
        for item in items:
            click.echo(f"{item.name:24} {item.runbook:36} {item.title}")
        return
    if run_all == bool(names):
        raise click.UsageError("name one or more drills, or pass --all (see --list)")
    unknown = [n for n in names if n not in DRILL_MODULES]
    if unknown:
        raise click.UsageError(f"unknown drill(s): {', '.join(unknown)} (see --list)")
    chosen = list(DRILL_MODULES) if run_all else list(names)

    def terminate(signum: int, frame: Any) -> None:  # SIGTERM: clean up like Ctrl-C does
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    failed: list[str] = []
    verdicts: list[dict[str, Any]] = []
    started = time.monotonic()
    progress = Progress(len(chosen), as_json=as_json)
    try:
        for name in chosen:
            with progress.step(f"drill {name}") as step:
                evidence = run_drill(get_drill(name), out, keep=keep)
                step.verdict = verdict = "PASS" if evidence["pass"] else "FAIL"
            verdicts.append(_verdict(name, evidence))
            click.echo(f"{verdict} {name} ({evidence['duration_seconds']:.1f}s) evidence: "
                       f"{evidence.get('evidence_file')}", err=as_json)
            if evidence.get("kept_workdir"):
                click.echo(f"     workdir kept: {evidence['kept_workdir']}", err=as_json)
            if not evidence["pass"]:
                failed.append(name)
                click.echo(f"     {evidence['failure']['message'].splitlines()[0][:300]}", err=True)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    elapsed = time.monotonic() - started
    if as_json:
        click.echo(json.dumps({"pass": not failed, "passed": len(chosen) - len(failed), "total": len(chosen),
                               "duration_seconds": round(elapsed, 3), "drills": verdicts}, indent=2))
    else:
        click.echo(f"{len(chosen) - len(failed)}/{len(chosen)} drills passed in {elapsed:.1f}s")
    sys.exit(1 if failed else 0)


def _verdict(name: str, evidence: dict[str, Any]) -> dict[str, Any]:
    """One drill's entry in the --json document (its evidence file has the rest)."""
    failure = evidence.get("failure")
    return {"drill": name, "pass": evidence["pass"], "duration_seconds": evidence["duration_seconds"],
            "evidence_file": evidence.get("evidence_file"), "kept_workdir": evidence.get("kept_workdir"),
            "failure": failure["message"].splitlines()[0][:300] if failure else None}
