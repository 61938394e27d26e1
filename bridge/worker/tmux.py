"""The tmux adapter: the only module that runs tmux (argv lists, never a shell, every call with a timeout).

Traps it avoids (see TRAPS.md): text is typed with `send-keys -l -t <target> -- <text>` so nothing is read as a key
name or a flag; Enter is a separate call; control characters are stripped by the caller's envelope; `pane_dead` is
only visible with `remain-on-exit`, which is set on every window the bridge creates; a pane in copy mode swallows
keys, so `pane_in_mode` counts as busy.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bridge.services.panes import Pane, TmuxError, TmuxUnavailable


def _end_of_second(stamps: list[int]) -> float | None:
    """The latest `client_activity` as the end of its second: tmux keeps whole seconds, and the key press may have
    come late in that second, so rounding down would end a quiet window up to a second early."""
    return float(max(stamps) + 1) if stamps else None


class Tmux:
    """tmux on the default server, or on a private socket (`-L name`) for tests and isolated setups."""

    def __init__(self, socket_name: str | None = None, timeout: float = 5.0):
        self.socket_name = socket_name
        self.timeout = timeout

    @staticmethod
    def available() -> bool:
        """True when a tmux binary is on PATH."""
        return shutil.which("tmux") is not None

    def _argv(self, args: Sequence[str]) -> list[str]:
        return ["tmux", *(["-L", self.socket_name] if self.socket_name else []), *args]

    def run(self, *args: str) -> str:
        """Run one tmux command; return stdout; raise TmuxError on failure or timeout."""
        try:
            done = subprocess.run(self._argv(args), capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TmuxUnavailable(f"tmux {args[0]}: {exc}") from exc
        if done.returncode != 0:
            raise TmuxError(f"tmux {args[0]}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def probe(self, target: str) -> Pane | None:
        """The pane a target names (with its session's latest human input), or None when tmux says it does not
        exist. Raises TmuxUnavailable when tmux does not answer (a stopped or overloaded machine): an unanswered probe
        is not proof that a pane is gone.

        One tmux invocation (`display-message ; list-clients`): the wake path's latency is mostly process starts.
        """
        try:
            out = self.run("display-message", "-p", "-t", target,
                           "#{pane_id}\t#{session_name}\t#{pane_dead}\t#{pane_in_mode}", ";",
                           "list-clients", "-t", target, "-F", "#{client_activity}")
        except TmuxUnavailable:
            raise
        except TmuxError:
            return None
        lines = out.splitlines()
        parts = lines[0].split("\t") if lines else []
        if len(parts) != 4 or not parts[0]:
            return None
        stamps = [int(v) for v in lines[1:] if v.strip().isdigit()]
        return Pane(pane_id=parts[0], session=parts[1], dead=parts[2] == "1", in_mode=parts[3] == "1",
                    last_input=_end_of_second(stamps))

    def last_human_input(self, session: str) -> float | None:
        """Unix time of the latest key press of any client attached to the session (tmux `client_activity`)."""
        try:
            out = self.run("list-clients", "-t", session, "-F", "#{client_activity}")
        except TmuxError:
            return None
        return _end_of_second([int(v) for v in out.split() if v.isdigit()])

    def type_line(self, target: str, line: str, *, mode: str = "keys", enter_delay: float = 0.5) -> None:
        """Type one line into a pane, wait `enter_delay`, then press Enter as a separate tmux command.

        Real TUIs (Claude Code, Codex) read text and Enter arriving in one burst as a paste and do not submit it, so
        the Enter comes on its own after a settle delay. `mode` "keys" types literally (`send-keys -l … -- <line>`:
        never a key name or a flag); "paste" loads the line into a buffer and pastes it bracketed (`paste-buffer -p`),
        for runtimes that prefer it. tmux reads an argument ending in `;` as a command separator, so a trailing `;`
        is escaped.
        """
        if line.endswith(";"):
            line = line[:-1] + "\\;"
        if mode == "paste":
            buffer = f"bridge-{secrets.token_hex(4)}"
            self.run("set-buffer", "-b", buffer, "--", line, ";", "paste-buffer", "-p", "-d", "-b", buffer,
                     "-t", target)
        else:
            self.run("send-keys", "-l", "-t", target, "--", line)
        if enter_delay > 0:
            time.sleep(enter_delay)
        self.run("send-keys", "-t", target, "Enter")

    def has_session(self, name: str) -> bool:
        """True when a session with exactly this name exists."""
        try:
            self.run("has-session", "-t", f"={name}")
            return True
        except TmuxError:
            return False

    def new_window(self, session: str, window_name: str, argv: Sequence[str], *, cwd: str | None = None,
                   env: Mapping[str, str] | None = None) -> str:
        """Start `argv` (no shell) in a new window of `session` (created if needed); return its pane target.

        The pane's command first waits on a tmux channel (`wait-for`) until `remain-on-exit` is set, then execs
        `argv`: a command that exits at once leaves a dead pane to inspect, never a vanished target."""
        channel = f"bridge-start-{secrets.token_hex(6)}"
        held = ["sh", "-c", f'"{self.binary()}" wait-for {channel} && exec "$@"', "sh", *argv]
        options = [*(["-c", cwd] if cwd else []), *[a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]]
        fmt = "#{pane_id}"
        if self.has_session(session):
            out = self.run("new-window", "-d", "-P", "-F", fmt, "-t", f"={session}:", "-n", window_name, *options,
                           "--", *held)
        else:
            out = self.run("new-session", "-d", "-P", "-F", fmt, "-s", session, "-n", window_name,
                           "-x", "200", "-y", "50", *options, "--", *held)
        pane_id = out.strip()
        try:
            self.run("set-option", "-w", "-t", pane_id, "remain-on-exit", "on", ";", "wait-for", "-S", channel)
        except TmuxError:
            with contextlib.suppress(TmuxError):
                self.kill_pane(pane_id)
            raise
        return pane_id

    @staticmethod
    def binary() -> str:
        """The tmux executable's path (a pane's own PATH may not have it)."""
        return shutil.which("tmux") or "tmux"

    def exit_status(self, target: str) -> int | None:
        """How a pane's command ended: its exit status, or 128 + the signal that killed it, or -1 when tmux saw it
        end but recorded neither (tmux 3.3 sometimes does not); None while it runs or when the pane is gone."""
        try:
            out = self.run("display-message", "-p", "-t", target,
                           "#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}").strip()
        except TmuxError:
            return None
        dead, status, signal = ([*out.split("\t"), "", ""])[:3]
        if dead != "1":
            return None
        if status.isdigit():
            return int(status)
        return 128 + int(signal) if signal.isdigit() else -1

    def kill_pane(self, target: str) -> None:
        """Kill a pane (its window goes with it when it was the last pane)."""
        self.run("kill-pane", "-t", target)

    def capture(self, target: str, lines: int = 200) -> str:
        """The visible text of a pane plus some history."""
        return self.run("capture-pane", "-p", "-J", "-t", target, "-S", f"-{lines}")

    def kill_server(self) -> None:
        """Stop this socket's tmux server and, for a private socket, remove the socket file tmux leaves behind."""
        with contextlib.suppress(TmuxError):
            self.run("kill-server")
        if self.socket_name:
            folder = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
            with contextlib.suppress(OSError):
                (folder / self.socket_name).unlink()

    def wait_for_text(self, target: str, text: str, timeout: float = 10.0) -> bool:
        """Poll a pane until `text` appears (tests and drills)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.capture(target):
                    return True
            except TmuxError:
                pass
            time.sleep(0.02)
        return False
