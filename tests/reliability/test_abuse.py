"""The abuse scenario at a small scale against real `bridge serve` processes: a write flood meets its quota, a
long-poll hog and 130 slow sockets do not keep other agents from being served (every request answered, p99 under
a second, no timeout)."""

from __future__ import annotations

import pytest
from bridge_ops.reliability.abuse import run
from bridge_ops.reliability.figures import Scale

MEASURES = [
    "write flood: the flooder's posts refused 429", "write flood: 429s outside the envelope",
    *(f"{load}: {what}" for load in ("write flood: another agent's post", "long-polls: another agent's post",
                                     "long-polls: /health", "slow connections: normal /health",
                                     "slow connections: normal read_messages")
      for what in ("served", "p50", "p99", "timeouts")),
    "long-polls: the hog's waits", "slow connections: sockets trickling",
]


@pytest.mark.slow
def test_abuse_scenario(tmp_path, figures_check) -> None:
    figures = run(Scale(n=1), tmp_path)
    figures_check(figures, MEASURES)
