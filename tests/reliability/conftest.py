"""Shared checks for the reliability scenarios' CI tier."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from bridge_ops.reliability.figures import Figure


def check(figures: list[Figure], measures: list[str]) -> None:
    """Every expected measure is reported with a non-empty denominator, and every figure met its target, except
    timings (unit ms): speed belongs to benchmarks, so a timing must only have been measured."""
    reported = {f.measure for f in figures}
    missing = [m for m in measures if not any(r.startswith(m) for r in reported)]
    assert not missing, f"figures not reported: {missing}; got {sorted(reported)}"
    table = "\n".join(f"{f.area} | {f.measure} | {f.cell()} | target {f.target} | {f.passed} | {f.note}"
                      for f in figures)
    for f in figures:
        if f.unit == "ms":
            assert f.total is None and math.isfinite(f.count) and f.count > 0, table
        else:
            assert f.passed, f"{f.area}: {f.measure} = {f.cell()}, target {f.target}\n{table}"
            assert f.total is None or f.total > 0 or f.target == "0", table


@pytest.fixture
def figures_check() -> Callable[[list[Figure], list[str]], None]:
    return check
