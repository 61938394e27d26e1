"""CI tier of `crash`: kill -9 of `bridge serve` under idempotent write load (two runs), restart, read back."""

from __future__ import annotations

import pytest
from bridge_ops.reliability import durability
from bridge_ops.reliability.figures import Scale

pytestmark = pytest.mark.slow


def test_crash_loses_no_acknowledged_message_leaves_no_gap_and_no_duplicate(tmp_path, figures_check):
    figures = durability.run(Scale(2), tmp_path)
    figures_check(figures, ["acknowledged messages lost", "seq gaps", "duplicates after idempotent retries",
                            "in-doubt posts resolved"])
    lost = next(f for f in figures if f.measure.startswith("acknowledged messages lost"))
    assert lost.total and lost.total >= 100, "the writers got plenty of acknowledgements before the crashes"
