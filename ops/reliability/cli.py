"""`bridge ops reliability [--scale N] [--out report.json] [--only NAME ...]`: run the reliability scenarios and
print their figures as a table; exit 1 when a figure misses its target or a scenario could not run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click
from bridge_ops.reliability import SCENARIOS, NotAvailable, load

from bridge.cli.progress import Progress

COLUMNS = (("area", 24), ("measure", 52), ("figure", 18), ("target", 18), ("verdict", 7))


def run_scenario(name: str, scale: Any, root: Path) -> dict[str, Any]:
    """Run one scenario in `root/<name>`; its record: status (ok, not available, error), seconds, figures."""
    import traceback

    entry: dict[str, Any] = {"name": name, "module": f"bridge_ops.reliability.{SCENARIOS[name]}", "status": "ok",
                             "seconds": 0.0, "figures": [], "detail": None}
    started = time.monotonic()
    try:
        run = load(name)
    except NotAvailable as exc:
        entry.update(status="not available", detail=str(exc))
        return entry
    workdir = root / name
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        figures = run(scale, workdir)
    except Exception as exc:  # one broken scenario must not hide the others' figures
        entry.update(status="error", detail=f"{type(exc).__name__}: {exc}",
                     traceback="".join(traceback.format_exception(exc))[-4000:])
    else:
        entry["figures"] = [f.to_json() for f in figures]
        if not figures:
            entry.update(status="error", detail="the scenario reported no figure")
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def run_suite(names: list[str], scale: Any, root: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Run the scenarios in order; the report (JSON-ready) with `passed`. `progress` shows each as it runs."""
    import platform

    started = time.time()
    load_before = os.getloadavg()
    results = []
    progress = progress if progress is not None else Progress(len(names), enabled=False)
    for name in names:
        with progress.step(f"reliability {name}") as step:
            entry = run_scenario(name, scale, root)
            step.verdict = _verdict(entry)
        results.append(entry)
    passed = all(_verdict(e) == "PASS" for e in results)
    return {
        "scale": scale.n, "crash_runs": scale.crash_runs, "jobs": scale.jobs,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "scenarios": results, "passed": passed,
    }


def _verdict(entry: dict[str, Any]) -> str:
    """PASS when the scenario ran and every figure met its target, FAIL when one missed, else its status."""
    if entry["status"] != "ok":
        return entry["status"]
    return "PASS" if all(f["passed"] for f in entry["figures"]) else "FAIL"


def _row(*cells: str) -> str:
    return " ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()


def format_table(report: dict[str, Any]) -> str:
    """One row per figure: area, measure, "X of N", target, PASS/FAIL; one row per scenario that did not run."""
    from bridge_ops.reliability.figures import Figure

    lines = [_row(*(name for name, _ in COLUMNS)), "-" * sum(w + 1 for _, w in COLUMNS)]
    for entry in report["scenarios"]:
        if entry["status"] != "ok":
            verdict = "N/A" if entry["status"] == "not available" else "ERROR"
            lines.append(f"{_row(entry['name'], '', '', '', verdict)}  {entry['status']}: {entry['detail']}")
            continue
        for raw in entry["figures"]:
            figure = Figure(**raw)
            lines.append(_row(figure.area[:24], figure.measure[:52], figure.cell(), figure.target[:18],
                              "PASS" if figure.passed else "FAIL"))
    notes = [f for entry in report["scenarios"] for f in entry["figures"] if f.get("note")]
    if notes:
        lines.append("")
        lines += [f"  {f['area']}: {f['measure']}: {f['note']}" for f in notes]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines.append(f"{verdict}: scale {report['scale']} ({report['crash_runs']} crash runs, {report['jobs']} jobs) in "
                 f"{report['seconds']:.0f}s; load average {report['environment']['loadavg_before'][0]:.1f} -> "
                 f"{report['environment']['loadavg_after'][0]:.1f} on {report['environment']['cpus']} CPUs")
    return "\n".join(lines)


def _selection(only: tuple[str, ...], more: tuple[str, ...]) -> list[str]:
    names = [n.strip() for item in (*only, *more) for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise click.UsageError(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    return [n for n in SCENARIOS if n in names] if names else list(SCENARIOS)


@click.command("reliability")
@click.option("--scale", type=click.IntRange(1, 1000), default=2, show_default=True,
              help="Size of the run: crash runs; every other count derives from it (jobs = 100 x scale).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the JSON report to this file.")
@click.option("--only", multiple=True, metavar="NAME [NAME ...]",
              help=f"Run only these scenarios ({', '.join(SCENARIOS)}).")
@click.option("--keep", is_flag=True, help="Keep the working directory (databases, logs) for inspection.")
@click.argument("more", nargs=-1, metavar="")
def reliability(scale: int, out: str | None, only: tuple[str, ...], keep: bool, more: tuple[str, ...]) -> None:
    """Drive real `bridge serve` and `bridge worker` processes on 127.0.0.1 through faults (kill -9, SIGSTOP,
    concurrent writers on one database, a full disk, a file-size limit, hostile input) and print what the clients
    measured as "X of N" figures against their targets. Everything started is stopped by PID."""
    import shutil
    import tempfile

    from bridge_ops.reliability.figures import Scale

    names = _selection(only, more)

    def terminate(signum: int, frame: Any) -> None:  # SIGTERM: clean up like Ctrl-C does
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    root = Path(tempfile.mkdtemp(prefix="bridge-reliability-"))
    try:
        report = run_suite(names, Scale(scale), root, Progress(len(names)))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if keep:
            click.echo(f"working directory kept: {root}", err=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    click.echo(format_table(report))
    if out:
        Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        click.echo(f"report written to {out}")
    raise SystemExit(0 if report["passed"] else 1)
