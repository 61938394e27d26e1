"""Fixtures for the wake pipeline on real parts: a private tmux server, a live bridge, stand-in agents in panes.

Every tmux server lives on its own socket (`tmux -L bridge-test-<random>`) and is killed at teardown; stand-in
agents are real processes in real panes talking HTTP to a real waitress server on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.auth.tokens import issue_token
from bridge.worker.supervisor import Supervisor
from bridge.worker.tmux import Tmux

# Small timings so every branch runs in seconds (the defaults are in SPEC §12).
FAST = {"ack_timeout": "1500ms", "quiet_window": "1s", "defer_recheck": "200ms", "max_defer": "3s",
        "worker_poll": "200ms", "worker_lease": "2s", "command_timeout": "20s"}


def standin_templates(token_dir: Path, url: str, *, resume_fails: bool = False) -> dict[str, Any]:
    """A `generic` runtime whose resume and spawn commands are the stand-in agent."""
    base = [sys.executable, "-m", "bridge.standin", "--url", url, "--token-file", f"{token_dir}/{{agent_id}}.token"]
    resume = [*base, "resume", *(["--fail"] if resume_fails else []), "{session_id}", "{prompt}"]
    spawn = [*base, "agent", "--first-prompt", "{prompt}"]
    return {"generic": {"resume": resume, "spawn": spawn}}


@dataclass
class WakeStack:
    """A live bridge with a supervisor (not looping unless `start_worker()`), a private tmux and token files."""

    live: Any
    tmux: Tmux
    token_dir: Path
    make_token: Callable[..., str]
    supervisor: Supervisor
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def bridge(self) -> Any:
        return self.live.parts.bridge

    @property
    def api(self) -> Any:
        return self.live.client

    def token_file(self, agent_id: str, *, session_id: str | None = None) -> Path:
        """Write the agent's token where the stand-in templates look for it."""
        token = self.make_token(agent_id, session_id=session_id or f"{agent_id}-s1")
        path = self.token_dir / f"{agent_id}.token"
        path.write_text(token)
        return path

    def launch_standin(self, agent_id: str, *, reply: str | None = None, wait: bool = True) -> str:
        """Start a stand-in agent in a new window of the workspace session; return its pane id."""
        self.token_file(agent_id)
        argv = [sys.executable, "-m", "bridge.standin", "--url", self.live.url, "--token-file",
                str(self.token_dir / f"{agent_id}.token"), "agent", *(["--reply", reply] if reply else [])]
        pane = self.tmux.new_window(self.bridge.settings.workspace_tmux_session, agent_id, argv)
        if wait:
            assert self.tmux.wait_for_text(pane, "STANDIN READY", timeout=15), self.tmux.capture(pane)
            assert self.wait_for(lambda: self.session(agent_id) is not None, 10)
        return pane

    def session(self, agent_id: str) -> dict[str, Any] | None:
        from bridge.store import control

        return self.bridge.store.read(lambda c: control.get_session(c, self.bridge.workspace, agent_id))

    def job(self, trigger_id: str) -> dict[str, Any]:
        from bridge.store import triggers

        return self.bridge.store.read(lambda c: triggers.get_job(c, trigger_id))

    def attempts(self, trigger_id: str) -> list[dict[str, Any]]:
        from bridge.store import triggers

        return self.bridge.store.read(lambda c: triggers.attempts(c, trigger_id))

    def start_worker(self) -> None:
        """Run the supervisor loop in a thread (stopped at teardown)."""
        self._thread = threading.Thread(target=self.supervisor.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop_worker(self) -> None:
        self._stop.set()
        self.supervisor.nudge.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def run_until(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Tick the supervisor (this thread) until `predicate()` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervisor.tick()
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError("condition not reached in time")

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        return None


def make_wake_stack(tmp_path: Path, make_parts: Callable[..., Any], live_factory: Callable[[Any], Any],
                    make_token_for: Callable[[Any], Callable[..., str]], tmux: Tmux, *,
                    resume_fails: bool = False, **overrides: Any) -> WakeStack:
    """Build parts with fast timings and the stand-in runtime, serve them, and make a supervisor."""
    token_dir = tmp_path / "tokens"
    token_dir.mkdir(exist_ok=True)
    runtimes = tmp_path / "runtimes.json"
    runtimes.write_text("{}")
    settings = {**FAST, "tmux_socket": tmux.socket_name, "runtimes_file": str(runtimes), **overrides}
    parts = make_parts(**settings)
    live = live_factory(parts)
    runtimes.write_text(json.dumps(standin_templates(token_dir, live.url, resume_fails=resume_fails)))
    supervisor = Supervisor(parts.bridge, tmux)
    supervisor.url = live.url
    return WakeStack(live=live, tmux=tmux, token_dir=token_dir, make_token=make_token_for(parts),
                     supervisor=supervisor)


def mint_for(parts: Any) -> Callable[..., str]:
    """A token minter for a given parts (the conftest `make_token` is bound to the default parts)."""
    def mint(agent_id: str, role: str = "participant", *, session_id: str | None = None, ttl: float = 3600) -> str:
        settings = parts.bridge.settings
        return issue_token(parts.key, issuer=settings.issuer, audience=settings.audience, agent_id=agent_id,
                           role=role, workspace_id=settings.workspace, session_id=session_id or f"{agent_id}-s1",
                           ttl=ttl)[0]

    return mint


def recorder(path: Path, stack: WakeStack, agent_id: str = "reviewer") -> list[str]:
    """A resume command that appends its argv (after the script) as one JSON line to `path`, then does what a
    resumed agent must do for the resume to count: reads the thread named in the prompt and acknowledges it."""
    stack.token_file(agent_id)
    token_file = f"{stack.token_dir}/{{agent_id}}.token"
    script = ("import json, sys; from bridge.standin import main\n"
              "open(sys.argv[1], 'a').write(json.dumps(sys.argv[4:]) + '\\n')\n"
              "sys.exit(main(['--url', sys.argv[2], '--token-file', sys.argv[3], 'resume', *sys.argv[5:]]))")
    return [sys.executable, "-c", script, str(path), stack.live.url, token_file, "{trigger_id}",
            "{session_id}", "{prompt}"]


class Human:
    """A real tmux client attached in a pseudo-terminal: bytes written to it are key presses (`client_activity`)."""

    def __init__(self, tmux: Tmux, session: str, window: str):
        tmux.run("select-window", "-t", window)  # keys go to this window, not to the agent's pane
        self.tmux = tmux
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(["tmux", "-L", str(tmux.socket_name), "attach-session", "-t", session],
                                     stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     env={**os.environ, "TERM": "xterm"}, start_new_session=True)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._stop = threading.Event()
        self._typer: threading.Thread | None = None
        self.last_key = 0.0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not tmux.run("list-clients", "-t", session, "-F", "#{client_pid}"):
            time.sleep(0.02)
        assert tmux.last_human_input(session) is not None, "the tmux client did not attach"

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
                self.type(b"y")

        self._typer = threading.Thread(target=loop, daemon=True)
        self._typer.start()

    def stop_typing(self) -> None:
        self._stop.set()
        if self._typer is not None:
            self._typer.join(timeout=5)
            self._typer = None

    def close(self) -> None:
        self.stop_typing()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        os.close(self.slave)
        self._reader.join(timeout=5)
        os.close(self.master)
