"""The reliability suite (`bridge ops reliability`): scenarios that drive real `bridge serve` / `bridge worker`
processes on 127.0.0.1 through faults and report "X of N" figures measured by the clients (see figures.py).

Every scenario is a module `ops/reliability/<module>.py` with `run(scale: Scale, workdir: Path) -> list[Figure]`.
Modules are imported only when a scenario runs (`bridge` starts without them), and a module that does not exist
yet is reported as not available rather than breaking the suite.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# scenario name -> module in this package, in the order the suite runs them
SCENARIOS: dict[str, str] = {
    "crash": "durability",
    "writers": "writers",
    "workers": "workers",
    "storage": "storage",
    "hostile": "hostile",
    "attacks": "attacks",
    "abuse": "abuse",
}


class NotAvailable(Exception):
    """The scenario's module is not there (not written yet, or not installed)."""


def load(name: str) -> Callable[[Any, Path], list[Any]]:
    """The `run` function of scenario `name` (KeyError for an unknown name, NotAvailable for a missing module)."""
    module_name = f"{__name__}.{SCENARIOS[name]}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise NotAvailable(f"{module_name} does not exist") from exc
    run = getattr(module, "run", None)
    if not callable(run):
        raise NotAvailable(f"{module_name} has no run(scale, workdir)")
    return run  # type: ignore[no-any-return]
