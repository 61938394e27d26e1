"""`bridge ops ...`: drills, the SLI harness, the go-live readiness check, real-agent wake latency, the database
seeder, the scale targets and the reliability suite.

The product finds this group through the `bridge.commands` entry point in pyproject.toml; each subcommand is
imported only when it runs (or shows its own help)."""

from __future__ import annotations

import click

from bridge.cli.lazy import LazyGroup, section

COMMANDS = section(
    "ops",
    ("drill", "bridge_ops.drills.cli:drill",
     "Run runbook drills on a real stack in a temporary directory (127.0.0.1 only); exit 1 if one fails."),
    ("sli", "bridge_ops.sli:sli",
     "Measure the service levels (docs/api.md) on the real stack (bridge serve, FULL, worker, tmux stand-ins)."),
    ("readiness", "bridge_ops.readiness:readiness",
     "Run the go-live checklist for real and print a go/no-go table; exit 0 only on GO."),
    ("agent-wakes", "bridge_ops.agent_wakes:agent_wakes",
     "Post-to-tool-call latency of the real Claude Code and Codex CLIs, by wake path (fake models)."),
    ("seed", "bridge_ops.seed:seed",
     "Bulk-fill a database with realistic history (threads, messages, events, cursors, sessions) for benchmarks."),
    ("scale", "bridge_ops.scale:scale",
     "Scale targets: p95 of every operation and worker tick on 1M-message histories against 1k, on a real server."),
    ("stores", "bridge_ops.stores:stores",
     "SQLite and PostgreSQL side by side in one run: post latency and throughput, post-to-visible, message-to-wake."),
    ("reliability", "bridge_ops.reliability.cli:reliability",
     "Drive real `bridge serve` and `bridge worker` processes on 127.0.0.1 through faults (kill -9, SIGSTOP, "
     "concurrent writers on one database, a full disk, a file-size limit, hostile input) and print what the "
     "clients measured as \"X of N\" figures against their targets."),
)


@click.group(cls=LazyGroup, table=COMMANDS)
def ops() -> None:
    """Ops tooling: runbook drills, SLI measurements, launch readiness."""
