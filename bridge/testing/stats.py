"""Nearest-rank percentiles: the one definition every report uses."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `values`; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float], digits: int = 2) -> dict[str, float]:
    """p50/p95/p99/max/mean of `values` (rounded), the shape every latency report uses; empty -> {}."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return {"p50": round(percentile(ordered, 50), digits), "p95": round(percentile(ordered, 95), digits),
            "p99": round(percentile(ordered, 99), digits), "max": round(ordered[-1], digits),
            "mean": round(statistics.fmean(ordered), digits)}
