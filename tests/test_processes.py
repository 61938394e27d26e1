"""The harness's child processes: a Python child that ignores SIGTERM leaves its stacks in its log when stopped."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from bridge.testing.processes import Proc, clean_env, wait_until

STUCK = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def stuck_in_a_call_that_never_returns():
    print("started", flush=True)
    while True:
        time.sleep(1)
stuck_in_a_call_that_never_returns()
"""


def test_a_python_child_that_ignores_sigterm_dumps_its_stacks_then_dies(tmp_path: Path) -> None:
    proc = Proc("stuck", [sys.executable, "-c", STUCK], tmp_path / "stuck.log", env=clean_env())
    assert wait_until(lambda: "started" in proc.log_text(), 20), proc.log_text()
    assert proc.stop(timeout=1) == -signal.SIGABRT
    assert not proc.alive()
    log = proc.log_text()
    assert "Fatal Python error: Aborted" in log, log
    assert "stuck_in_a_call_that_never_returns" in log, log


def test_a_child_without_the_fault_handler_is_killed(tmp_path: Path) -> None:
    env = {k: v for k, v in clean_env().items() if k != "PYTHONFAULTHANDLER"}
    proc = Proc("stuck", [sys.executable, "-c", STUCK], tmp_path / "stuck.log", env=env)
    assert wait_until(lambda: "started" in proc.log_text(), 20), proc.log_text()
    assert proc.stop(timeout=1) == -signal.SIGKILL
    assert "stuck_in_a_call_that_never_returns" not in proc.log_text()
