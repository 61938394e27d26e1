"""Run an agent's resume or spawn command (bounded, in its own process group) for the worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    detail: str
    interrupted: bool = False  # stopped by `cancel` (worker shutdown): no verdict on the runtime


def run_command(argv: Sequence[str], *, timeout: float, cwd: str | None = None,
                env: Mapping[str, str] | None = None, cancel: threading.Event | None = None) -> CommandResult:
    """Run an argv list (never a shell) with a timeout, stdin from /dev/null and exactly `env` (default: the
    worker's); the process group is killed on timeout, or as soon as `cancel` is set (a worker shutting down must
    not wait for, nor leave behind, a long-running command)."""
    if cancel is not None and cancel.is_set():
        return CommandResult(False, "not started: worker stopping", interrupted=True)
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=cwd if cwd and os.path.isdir(cwd) else None,
                                env=dict(os.environ if env is None else env), start_new_session=True)
    except OSError as exc:
        return CommandResult(False, f"could not start {argv[0]!r}: {exc.strerror or exc}")
    deadline = time.monotonic() + timeout
    with proc:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=max(0.0, min(deadline - time.monotonic(), 0.2)))
                break
            except subprocess.TimeoutExpired:
                stopping = cancel is not None and cancel.is_set()
                if not stopping and time.monotonic() < deadline:
                    continue
            # the command leads its own session: kill the whole group, so children it started die with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.communicate()
            if stopping:
                return CommandResult(False, "interrupted: worker stopping", interrupted=True)
            return CommandResult(False, f"timed out after {timeout:g}s")
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [""]
        return CommandResult(False, f"exit {proc.returncode}: {tail[0][:200]}")
    return CommandResult(True, "exit 0")
