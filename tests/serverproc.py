"""Run `bridge serve` (and other `bridge` commands) as real subprocesses for multi-process and crash tests.

Every process started here is stopped by its PID and waited for; stderr goes to a file (no pipe to drain), which
is closed when the process is reaped, so pytest's `filterwarnings=error` never sees a ResourceWarning.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

_READY = re.compile(r"READY (http://\S+)")


def clean_env(**settings: Any) -> dict[str, str]:
    """The current environment without any BRIDGE_* variable, plus the given `BRIDGE_<NAME>` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({f"BRIDGE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class ServerProcess:
    """`python -m bridge serve --port 0 --db <file>` in a child process; `url` is known once it printed READY."""

    def __init__(self, db: Path | str, log_path: Path | str, *, worker: bool = False, **settings: Any):
        self.db = str(db)
        self.worker = worker
        self.log_path = Path(log_path)
        self.env = clean_env(**settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the server and wait (bounded) for its READY line."""
        assert self.proc is None, "already started"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        offset = self._log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", "0", "--db", self.db,
             "--worker" if self.worker else "--no-worker"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            match = _READY.search(text)
            if match:
                self.url = match.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"bridge serve did not become ready; log:\n{self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """`kill -9` the server (a crash: no shutdown code runs) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap(5)

    def stop(self) -> None:
        """SIGTERM, wait (bounded), SIGKILL if it does not exit; always reaped."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
        self._reap(10)

    def _reap(self, timeout: float) -> None:
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        """Everything the server(s) wrote to stderr (for assertion messages)."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_bridge(*args: str, timeout: float = 30.0, **settings: Any) -> subprocess.CompletedProcess[str]:
    """Run one `bridge` CLI command to completion (bounded) and return its result."""
    return subprocess.run([sys.executable, "-m", "bridge", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env=clean_env(**settings), check=False)
