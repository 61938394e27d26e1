"""`bridge demo`: the pilot review loop on a throwaway stack, with a live timeline."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click


@click.command()
@click.option("--real", is_flag=True,
              help="Run the real Claude Code (reviewer) and Codex (executioner) CLIs against local fake models "
                   "(installed by ./scripts/test, or on PATH) instead of the stand-in agents.")
@click.option("--scenario", type=click.Choice(["review_loop", "loop_guard", "all"]), default="review_loop",
              show_default=True, help="review_loop: findings, fixes, a rejection, verification, resolve; "
                                      "loop_guard: a repeated finding blocks the thread, an owner unblocks it.")
@click.option("--keep", is_flag=True, help="Keep the stack and the agents running afterwards (Ctrl-C stops them).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the database, logs and agent homes go (default: a temporary folder, removed after).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds a scenario may take.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as one JSON document at the end.")
def demo(real: bool, scenario: str, keep: bool, workdir: Path | None, timeout: float, as_json: bool) -> None:
    """Watch agents hand work to each other through the bridge, with no human relay.

    Starts `bridge serve` on a free port with a temporary database, a private tmux server with the agents in its
    panes, and plays the coordinator. Attach to the tmux session it prints to watch the agents being woken."""
    from bridge.demo import pilot

    if real:
        from bridge.agents.base import find_cli

        try:
            for name in ("claude", "codex"):
                find_cli(name)
        except FileNotFoundError as exc:
            raise click.ClickException(f"{exc}. ./scripts/test installs the pinned versions "
                                       "(or: cd scripts/agent-clis && npm ci)") from exc
    scenarios = list(pilot.SCENARIOS) if scenario == "all" else [scenario]
    reports = []
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as scratch:
        for name in scenarios:
            folder = (workdir or Path(scratch)) / name

            def ready(stack: pilot.Stack) -> None:
                click.echo(f"watch the agents: tmux -L {stack.tmux.socket_name} attach -t "
                           f"{stack.settings.workspace_tmux_session}   (detach: Ctrl-b d)")
                if keep:
                    click.echo(f"the bridge stays up at {stack.url} (database {stack.db}) until Ctrl-C")

            click.echo(f"== {name} ({'real Claude Code + Codex, fake models' if real else 'stand-in agents'})")
            hold = _hold if keep else None
            report = pilot.run(name, real=real, workdir=folder, say=click.echo, timeout=timeout, on_ready=ready,
                               after=hold)
            reports.append(report)
            click.echo(f"== {name}: {'OK' if report.ok else 'FAILED'} in {report.seconds:.1f}s, thread "
                       f"{report.thread_id} {report.status}, open items {report.open_items}, wakes by path "
                       f"{report.wakes_by_path()}" + "".join(f"\n   problem: {p}" for p in report.problems))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=2))
    raise SystemExit(0 if all(r.ok for r in reports) else 1)


def _hold(_stack: object) -> None:
    click.echo("scenario done; everything keeps running. Ctrl-C to stop.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo("stopping")
