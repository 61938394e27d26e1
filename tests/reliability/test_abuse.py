"""The abuse scenario at a small scale against real `bridge serve` processes: a write flood meets its quota, a
long-poll hog and 130 slow sockets do not keep other agents from being served (every request answered, p99 under
a second, no timeout)."""

from __future__ import annotations

from ops.reliability.abuse import run
from ops.reliability.figures import Scale


def test_abuse_scenario(tmp_path) -> None:
    figures = run(Scale(n=1), tmp_path)
    failed = [f"{f.measure}: {f.cell()} (target {f.target}) {f.note}" for f in figures if not f.passed]
    assert not failed, failed
    measures = {f.measure.split(":")[0] for f in figures}
    assert {"write flood", "long-polls", "slow connections"} <= measures
