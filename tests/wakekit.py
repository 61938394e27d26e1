"""Fixtures for the wake pipeline on real parts: a private tmux server, a live bridge, stand-in agents in panes.

Every tmux server lives on its own socket (`tmux -L bridge-test-<random>`) and is killed at teardown; stand-in
agents are real processes in real panes talking HTTP to a real waitress server on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import new_thread, post

from bridge.testing.processes import wait_until
from bridge.testing.stack import FAST_TIMINGS, standin_templates, timing_settings
from bridge.testing.tokens import Minter
from bridge.worker.supervisor import Supervisor
from bridge.worker.tmux import Tmux

# The harness's fast wake timings, with a 2 s worker lease (these tests expire leases on purpose).
FAST = {**timing_settings(FAST_TIMINGS), "worker_lease": "2s"}


@dataclass
class WakeStack:
    """A live bridge with a supervisor (not looping unless `start_worker()`), a private tmux and token files."""

    live: Any
    tmux: Tmux
    token_dir: Path
    make_token: Minter
    supervisor: Supervisor
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def bridge(self) -> Any:
        return self.live.parts.bridge

    @property
    def api(self) -> Any:
        return self.live.client

    @property
    def db(self) -> str:
        """The `--db` of this bridge (a SQLite file or a PostgreSQL URL)."""
        return self.bridge.settings.db

    def thread(self, *participants: str, title: str = "wake test") -> tuple[str, str]:
        """A workflow thread created over HTTP by the coordinator; (thread_id, coordinator token)."""
        coord = self.make_token("coord", "coordinator")
        return new_thread(self.api, coord, list(participants), title=title), coord

    def say(self, thread_id: str, body: str, *, sender: str = "exec", **extra: Any) -> int:
        """A chat message posted over HTTP by `sender`; its seq."""
        return int(post(self.api, self.make_token(sender), thread_id, body, **extra)["seq"])

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
            assert wait_until(lambda: self.session(agent_id) is not None, 10)
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



def make_wake_stack(tmp_path: Path, make_parts: Callable[..., Any], live_factory: Callable[[Any], Any], tmux: Tmux, *,
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
    return WakeStack(live=live, tmux=tmux, token_dir=token_dir, make_token=Minter(parts.key, parts.bridge.settings),
                     supervisor=supervisor)


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
