"""CI tier of `writers`: three `bridge serve` processes on one database file, nine concurrent writers."""

from __future__ import annotations

import pytest
from bridge_ops.reliability import writers
from bridge_ops.reliability.figures import Scale

pytestmark = pytest.mark.slow


def test_concurrent_writers_on_one_file_get_no_busy_error_gap_or_duplicate(tmp_path, figures_check):
    figures = writers.run(Scale(2), tmp_path)
    figures_check(figures, ["busy errors returned to clients", "other refusals", "p99 post latency",
                            "acknowledged posts lost", "seq gaps", "duplicate messages"])
