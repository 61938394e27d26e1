"""Child processes of a harness run: started with a log file, waited for by their READY line, stopped by PID.

Every child gets its own session (so a stop reaches what it started), stdin from /dev/null unless given, and
stdout/stderr appended to a log file it holds itself (no pipe to drain). `Proc.stop()` sends SIGCONT first when
the process was paused, then SIGTERM, waits (bounded), SIGKILLs the process group if it is still there, and reaps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
HOST = "127.0.0.1"
READY_SERVE = re.compile(r"READY (http://\S+)")
READY_WORKER = re.compile(r"READY worker (\S+)")
_URL = re.compile(r"http://([^:/]+):(\d+)")


class NotReady(RuntimeError):
    """A child did not print its READY line in time (or exited first)."""


def bridge_argv(*args: str) -> list[str]:
    """`bridge <args>` as this interpreter runs it (the console script may not be on PATH)."""
    return [sys.executable, "-m", "bridge", *args]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any `BRIDGE_*` variable and without TMUX/TMUX_PANE (a stray one must not redirect
    a child, and a stand-in started from inside tmux must not think it runs in the caller's pane), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k not in ("TMUX", "TMUX_PANE")}
    env["PYTHONFAULTHANDLER"] = "1"  # a Python child that will not stop prints every thread's stack (Proc.stop)
    env.update(extra or {})
    return env


def settings_env(**settings: Any) -> dict[str, str]:
    """`name=value` settings as `BRIDGE_<NAME>` environment variables."""
    return {f"BRIDGE_{name.upper()}": str(value) for name, value in settings.items()}


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True while a process with this PID exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc; empty when it is gone)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def forked(pid: int) -> list[int]:
    """A process and the children it forked running its own program (the serving processes of `bridge serve
    --processes N`), not the commands it runs."""
    try:
        program = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    same = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/cmdline").read_bytes() == program:
                same.append(child)
    return [pid, *same]


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process and its forked serving processes (None when gone)."""
    total = None
    for member in forked(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total = (total or 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process and its forked serving processes (None when gone)."""
    total = None
    for member in forked(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        total = (total or 0) + kib * 1024
    return total


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Poll `predicate()` until it is truthy (its value) or `timeout` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def kill_pids(pids: Sequence[int], grace: float = 5.0) -> list[int]:
    """Wait up to `grace` seconds for `pids` to end, SIGKILL the survivors; return the PIDs that had to be killed."""
    wait_until(lambda: not any(pid_alive(p) for p in pids), grace)
    survivors = [p for p in pids if pid_alive(p)]
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in survivors), grace)
    return survivors


class Proc:
    """One child process with its log file; `port`/`url` once a server printed READY, `ready` its READY value."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str],
                 cwd: Path | str | None = None, stdin: int | IO[Any] | None = subprocess.DEVNULL,
                 preexec_fn: Callable[[], None] | None = None):
        self.name, self.argv, self.log_path = name, list(argv), Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child holds its own descriptor
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv, cwd=cwd, env=dict(env), stdin=stdin, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=preexec_fn)
        self.pid = self.popen.pid
        self.dumps_stacks = bool(env.get("PYTHONFAULTHANDLER"))  # SIGABRT prints its threads' stacks to the log
        self.ready: str | None = None
        self.url: str | None = None
        self.paused = False
        self.exit_code: int | None = None

    @property
    def port(self) -> int:
        """The port of a server's READY URL."""
        return int(self._address()[1])

    @property
    def host(self) -> str:
        return self._address()[0]

    def _address(self) -> tuple[str, str]:
        match = _URL.match(self.url or "")
        if not match:
            raise RuntimeError(f"{self.name} has no URL (not a server, or not ready)")
        return match.group(1), match.group(2)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self, since_start: bool = False) -> str:
        """What the process wrote (stdout and stderr); only since this start with `since_start`."""
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return (data[self.log_offset:] if since_start else data).decode("utf-8", "replace")

    def log_events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The JSON log lines of this start (optionally one `event`, with fields equal to `match`)."""
        found = []
        for line in self.log_text(since_start=True).splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (event is None or entry.get("event") == event) and all(entry.get(k) == v for k, v in match.items()):
                found.append(entry)
        return found

    def wait_ready(self, pattern: re.Pattern[str] = READY_SERVE, timeout: float = 60.0) -> str:
        """Wait (bounded) for the READY line; return its first group (a server's URL is kept in `url`). A child
        that exits or stays silent is stopped and NotReady raised with the end of its log."""
        def found() -> str | None:
            match = pattern.search(self.log_text(since_start=True))
            return match.group(1) if match else None

        wait_until(lambda: found() or not self.alive(), timeout, 0.02)
        value = found()
        if value is None:
            self.stop()
            raise NotReady(f"{self.name} did not become ready (exit {self.popen.returncode}): "
                           f"{self.log_text(since_start=True)[-2000:]}")
        self.ready = value
        if pattern is READY_SERVE:
            self.url = value
        return value

    # ------------------------------------------------------------------------------------------- signals
    def kill9(self) -> int | None:
        """`kill -9 <pid>`: a crash, no shutdown code runs; reaped."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self._reap(30)

    def pause(self) -> None:
        """SIGSTOP: the process (and the serving processes it forked) stops where it is (mid-job, holding whatever
        it claimed)."""
        self._signal_forked(signal.SIGSTOP)
        self.paused = True

    def cont(self) -> None:
        """SIGCONT: a paused process (and its forked serving processes) carries on from where it was."""
        self._signal_forked(signal.SIGCONT)
        self.paused = False

    @property
    def pids(self) -> list[int]:
        """Its PID and those of the serving processes it forked (`bridge serve --processes N`)."""
        return forked(self.pid) or [self.pid]

    def _signal_forked(self, signum: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (after SIGCONT if paused), bounded wait, then SIGKILL of its process group; reaped; the exit
        code. A Python child that outlives the wait is sent SIGABRT first, so its log shows where it hung."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                if self.paused:
                    self.cont()
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._dump_stacks()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        return self._reap(30)

    def _dump_stacks(self) -> None:
        if self.dumps_stacks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)

    def _reap(self, timeout: float) -> int | None:
        try:
            self.exit_code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.exit_code = self.popen.wait(timeout=timeout)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        return self.exit_code


def run_bridge(*args: str, env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
               timeout: float = 60.0, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `bridge` CLI command to completion (bounded) in a clean environment plus `env`."""
    return subprocess.run(bridge_argv(*args), capture_output=True, text=True, timeout=timeout, check=False,
                          env=clean_env(env), cwd=cwd, input=input_text,
                          stdin=None if input_text is not None else subprocess.DEVNULL)
