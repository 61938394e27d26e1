"""Drills and how one is run: a drill is a runbook's incident replayed on a real stack (see `context`), with its
evidence record written whatever happens (see `evidence`).

A drill module declares itself with `@drill(name, title, injects=..., verifies=...)` on its scenario function,
which gets a `DrillContext`; `run_drill` runs it from start to cleanup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge_ops.drills.context import DrillContext

Scenario = Callable[[DrillContext], None]


@dataclass(frozen=True)
class Drill:
    """One drill: the runbook it proves, what it injects and verifies, and the function that runs it."""

    name: str
    title: str
    runbook: str
    injects: str
    verifies: str
    run: Scenario


DRILLS: dict[str, Drill] = {}  # filled as drill modules are imported


def drill(name: str, title: str, *, injects: str, verifies: str) -> Callable[[Scenario], Scenario]:
    """Declare the decorated scenario as the drill `name`, proving runbooks/<name>.md."""
    def register(run: Scenario) -> Scenario:
        DRILLS[name] = Drill(name, title, f"runbooks/{name}.md", injects, verifies, run)
        return run

    return register


def run_drill(chosen: Drill, out_dir: Path | str | None = None, *, keep: bool = False) -> dict[str, Any]:
    """Run one drill from start to cleanup; return its evidence (`pass` tells the outcome). Never raises for a
    failed drill; KeyboardInterrupt/SystemExit still clean up, write the evidence, and propagate."""
    about = {"drill": chosen.name, "title": chosen.title, "runbook": chosen.runbook, "injects": chosen.injects,
             "verifies": chosen.verifies}
    ctx = DrillContext(chosen.name, about)
    out = Path(out_dir) if out_dir is not None else None
    error: BaseException | None = None
    try:
        chosen.run(ctx)
    except (KeyboardInterrupt, SystemExit) as exc:
        ctx.finish(exc, out, keep)
        raise
    except Exception as exc:
        error = exc
    return ctx.finish(error, out, keep)

