"""What every reliability scenario reports: figures of the form "X of N", measured from a client-side ledger.

A scenario is a function `run(scale: Scale, workdir: Path) -> list[Figure]`: it starts what it needs (real
`bridge serve` / `bridge worker` processes on 127.0.0.1), drives them, stops everything it started by PID, and
returns its figures. `passed` is judged against the figure's own target, never by the code under test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Scale:
    """How big one run is. `n` is the number of crash runs; every other count derives from it."""

    n: int = 2

    @property
    def crash_runs(self) -> int:
        return max(1, self.n)

    @property
    def malformed_bodies(self) -> int:
        return 500 * self.n

    @property
    def jobs(self) -> int:
        return 100 * self.n


@dataclass(frozen=True)
class Figure:
    """One measured figure: `count` of `total` (`total` None for a plain value such as a p99 in ms)."""

    area: str  # e.g. "crash durability"
    measure: str  # e.g. "acknowledged messages lost"
    count: float
    total: float | None
    target: str  # human-readable target, e.g. "0" or "< 500 ms"
    passed: bool
    unit: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def cell(self) -> str:
        """`count of total unit` or `count unit`."""
        count = f"{self.count:g}" if isinstance(self.count, float) else str(self.count)
        of = "" if self.total is None else f" of {self.total:g}"
        return f"{count}{of}{(' ' + self.unit) if self.unit else ''}"
