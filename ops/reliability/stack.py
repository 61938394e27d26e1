"""The stack every reliability scenario runs on: the harness's `Stack` with the suite's settings.

Everything it starts is stopped by PID when it exits; `synchronous=FULL` is forced whatever `env` says (the
figures are about what a committed write survives), and the servers log warnings only unless `env` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bridge.testing.stack import Stack


def reliability_stack(workdir: Path, env: Mapping[str, str] | None = None, *,
                      db: Path | str = "bridge.db") -> Stack:
    """A `Stack` in `workdir` (kept: the suite removes its root itself) on `db`, with `env` for every child."""
    return Stack(workdir, env={"BRIDGE_LOG_LEVEL": "WARNING", **(env or {}), "BRIDGE_SYNCHRONOUS": "FULL"}, db=db,
                 tmux_prefix="bridge-rel")
