"""CI tier of `workers`: trigger jobs (tens) through `bridge worker` processes that are killed (-9), stopped past
their lease (SIGSTOP/SIGCONT) and raced; deliveries counted in the fake agents' own logs."""

from __future__ import annotations

import pytest
from bridge_ops.reliability import workers
from bridge_ops.reliability.figures import Scale

pytestmark = pytest.mark.slow


def test_workers_lose_no_job_and_never_act_on_a_stale_claim(tmp_path, figures_check):
    figures = workers.run(Scale(1), tmp_path)
    figures_check(figures, ["jobs never reaching a terminal state", "jobs never delivered to the agent",
                            "live agents marked offline", "duplicate deliveries", "stale completions accepted",
                            "duplicate typing after SIGCONT"])
    assert {f.area for f in figures} == {"workers: kill -9", "workers: SIGSTOP", f"workers: {workers.RACERS} racing"}
    stale = next(f for f in figures if f.measure.startswith("stale completions accepted"))
    assert stale.total, "the stopped worker held at least one job when it was stopped"
