"""CI tier of `storage`: a full tmpfs and an RLIMIT_FSIZE-limited `bridge serve` (root, like
tests/test_storage_faults.py): refusals with their own reason, nothing acknowledged lost, recovery."""

from __future__ import annotations

import pytest
from bridge_ops.reliability import storage
from bridge_ops.reliability.figures import Scale

pytestmark = pytest.mark.slow


def test_storage_faults_refuse_cleanly_and_recover(tmp_path, figures_check):
    figures = storage.run(Scale(1), tmp_path)
    figures_check(figures, ["writes acknowledged but not committed", "refused writes found committed",
                            "refusals with reason", "reads answered while writes failed",
                            "writes accepted after space was freed", "/ready ready after space was freed"])
    assert {f.area for f in figures} == {"storage: disk full", "storage: file-size limit"}
