"""A person at the keyboard: a real tmux client attached in a pseudo-terminal; bytes written to it are key presses
(tmux counts them as `client_activity`, which is how the worker sees a human is typing)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
import time

from bridge.worker.tmux import Tmux


class Human:
    """`tmux attach` in a 200x50 pty, its keys going to `window` of `session`; close() ends it by PID."""

    def __init__(self, tmux: Tmux, session: str, window: str, env: dict[str, str] | None = None):
        tmux.run("select-window", "-t", window)  # keys go to this window, not to an agent's pane
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.argv = ["tmux", "-L", str(tmux.socket_name), "attach-session", "-t", session]
        try:
            self.proc = subprocess.Popen(self.argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                         env={**(env or os.environ), "TERM": "xterm"}, start_new_session=True)
        except OSError:
            os.close(self.slave)
            os.close(self.master)
            raise
        self.pid = self.proc.pid
        self.last_key = 0.0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._typer: threading.Thread | None = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not tmux.run("list-clients", "-t", session, "-F", "#{client_pid}"):
            time.sleep(0.02)
        if tmux.last_human_input(session) is None:
            self.close()
            raise RuntimeError("the tmux client did not attach")

    def _drain(self) -> None:
        """Read the client's screen output so it never blocks on a full pty."""
        while True:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def type(self, keys: bytes = b"x") -> float:
        """Press keys now; return the wall time just before the press."""
        before = time.time()
        os.write(self.master, keys)
        self.last_key = time.time()
        return before

    def keep_typing(self, interval: float = 0.1) -> None:
        """Type in the background until `stop_typing()` (a human who does not stop)."""
        def loop() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(OSError):
                    self.type(b"y")

        self._typer = threading.Thread(target=loop, daemon=True)
        self._typer.start()

    def stop_typing(self) -> None:
        self._stop.set()
        if self._typer is not None:
            self._typer.join(timeout=5)
            self._typer = None

    def close(self) -> int | None:
        """Stop typing, end the client by PID, close the terminal; the client's exit code."""
        self.stop_typing()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.slave >= 0:
            os.close(self.slave)
            self._reader.join(timeout=5)
            os.close(self.master)
            self.slave = self.master = -1
        return self.proc.returncode
