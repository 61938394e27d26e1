"""A running bridge in one directory: the one way every harness user starts `bridge serve` and `bridge worker`.

`Stack(workdir)` (a context manager; a temporary directory when none is given) owns:

- a database file (`bridge.db` in the directory unless `db=` says otherwise; a relative path is relative to the
  directory, which is every child's working directory, so runbook commands such as `--db ./bridge.db` run
  verbatim);
- `serve()` / `worker()`: `bridge serve` / `bridge worker` children on 127.0.0.1 (port 0), logging to
  `logs/<name>.log`, returned once their READY line is printed; `start()` runs any other long-lived child;
- `env`: the children's environment: nothing inherited from `BRIDGE_*`/`TMUX*`, the private tmux socket, the
  `timings` (FAST_TIMINGS unless told otherwise), plus `env`;
- a private tmux server (`tmux`, created on first use), stand-in agents in its panes (`launch_standin`), humans at
  its keyboard (`attach_human`), and the `generic` runtime templates that run the stand-in (`standin_runtimes`);
- real tokens signed with the database's own key (`token`, `token_file`), read-only queries (`query`, `rows`), and
  `bridge` CLI runs in the directory (`bridge`).

`close()` stops everything it started by PID (newest first: humans, children, then the tmux server with every pane
process) and returns what it did, for evidence. Subclasses record evidence by overriding `started()`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from bridge.settings import Settings
from bridge.testing import database
from bridge.testing.client import Client
from bridge.testing.human import Human
from bridge.testing.processes import HOST, READY_WORKER, Proc, bridge_argv, clean_env, wait_until
from bridge.testing.tmux import private_tmux, socket_name, stop_tmux
from bridge.testing.tokens import Minter
from bridge.worker.tmux import Tmux

# Small wake timings so every branch of the wake pipeline runs in seconds (the defaults are in bridge/settings.py).
FAST_TIMINGS = {
    "BRIDGE_ACK_TIMEOUT": "1500ms", "BRIDGE_QUIET_WINDOW": "1s", "BRIDGE_DEFER_RECHECK": "200ms",
    "BRIDGE_MAX_DEFER": "3s", "BRIDGE_WORKER_POLL": "200ms", "BRIDGE_WORKER_LEASE": "5s",
    "BRIDGE_COMMAND_TIMEOUT": "20s",
}
# The write quota, the loop guard and the trigger storm guard off: for load (leave them on to measure them).
NO_LIMITS = {"BRIDGE_WRITE_QUOTA_PER_MIN": "0", "BRIDGE_LOOP_GUARD_TURNS": "0", "BRIDGE_LOOP_GUARD_REPEATS": "0",
             "BRIDGE_TRIGGER_RATE_PER_MIN": "0"}
STANDIN_READY = "STANDIN READY"


def standin_templates(token_dir: Path, url: str | None = None, *, resume_fails: bool = False,
                      spawn: bool = True) -> dict[str, Any]:
    """A runtimes file's content: `generic` resume and spawn commands that run the stand-in agent with the token
    in `<token_dir>/<agent_id>.token` (talking to `url`, else to BRIDGE_URL, which the worker sets)."""
    base = [sys.executable, "-m", "bridge.standin", *(["--url", url] if url else []), "--token-file",
            f"{token_dir}/{{agent_id}}.token"]
    return {"generic": {
        "resume": [*base, "resume", *(["--fail"] if resume_fails else []), "{session_id}", "{prompt}"],
        "spawn": [*base, "agent", "--first-prompt", "{prompt}"] if spawn else None}}


def timing_settings(env: Mapping[str, str] = FAST_TIMINGS) -> dict[str, str]:
    """`BRIDGE_ACK_TIMEOUT`-style variables as `Settings.load` overrides (`ack_timeout`), for in-process parts."""
    return {name.removeprefix("BRIDGE_").lower(): value for name, value in env.items()}


class Stack:
    """See the module docstring."""

    def __init__(self, workdir: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                 timings: Mapping[str, str] = FAST_TIMINGS, db: Path | str = "bridge.db",
                 tmux_prefix: str = "bridge-stack", keep: bool = False):
        self.owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{tmux_prefix}-") if workdir is None else workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "tokens"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.keep = keep
        self.db_arg = str(db)
        # a SQLite file (relative to the workdir) or a PostgreSQL URL, as `bridge.testing.database` reads either
        self.db: Path | str = db if "://" in str(db) else self.workdir / db
        self.tmux_socket = socket_name(tmux_prefix)
        self.settings_env = {**timings, "BRIDGE_TMUX_SOCKET": self.tmux_socket, **(env or {})}
        self.env = clean_env(self.settings_env)
        self.procs: list[Proc] = []
        self.humans: list[Human] = []
        self.server: Proc | None = None
        self.panes: dict[str, str] = {}
        self._tmux: Tmux | None = None
        self._minter: Minter | None = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The current server's base URL."""
        if self.server is None or self.server.url is None:
            raise RuntimeError("no server is running")
        return self.server.url

    @cached_property
    def settings(self) -> Settings:
        """The bridge's settings for this database (defaults otherwise: names, the tmux session, timings)."""
        return Settings.load({"db": str(self.db)}, env={})

    # ------------------------------------------------------------------------------------------- processes
    def started(self, proc: Proc) -> None:
        """Called for every child once started (subclasses record evidence here)."""

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              stdin: int | IO[Any] | None = subprocess.DEVNULL, preexec_fn: Callable[[], None] | None = None) -> Proc:
        """Any long-lived child in the directory, logging to logs/<name>.log; stopped by `close()` at the latest."""
        proc = Proc(name, argv, self.workdir / "logs" / f"{name}.log", env={**self.env, **(env or {})},
                    cwd=self.workdir, stdin=stdin, preexec_fn=preexec_fn)
        self.procs.append(proc)
        self.started(proc)
        return proc

    def serve(self, name: str = "server", *args: str, worker: bool = False, env: Mapping[str, str] | None = None,
              db: Path | str | None = None, port: int = 0, timeout: float = 60.0,
              preexec_fn: Callable[[], None] | None = None) -> Proc:
        """`bridge serve --host 127.0.0.1 --port <port> --db <db> [--no-worker] <args>`, ready; it becomes the
        current `server`."""
        argv = bridge_argv("serve", "--host", HOST, "--port", str(port), "--db", str(db or self.db_arg),
                           *([] if worker else ["--no-worker"]), *args)
        proc = self.start(name, argv, env=env, preexec_fn=preexec_fn)
        proc.wait_ready(timeout=timeout)
        self.server = proc
        return proc

    def worker(self, name: str = "worker", *args: str, env: Mapping[str, str] | None = None,
               port: int | None = None, timeout: float = 60.0) -> Proc:
        """`bridge worker --db <db> --host 127.0.0.1 --port <the API's port>` (given to spawned agents), ready."""
        port = port if port is not None else (self.server.port if self.server is not None else None)
        argv = bridge_argv("worker", "--db", self.db_arg, "--host", HOST, *(["--port", str(port)] if port else []),
                           *args)
        proc = self.start(name, argv, env=env)
        proc.wait_ready(READY_WORKER, timeout)
        return proc

    def bridge(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0,
               input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `bridge <args>` to completion (bounded) in the directory, with the children's environment."""
        return subprocess.run(bridge_argv(*args), capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=self.workdir, env={**self.env, **(env or {})}, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL)

    def client(self, token: str | None = None, *, server: Proc | None = None, timeout: float = 30.0) -> Client:
        """A keep-alive client of a server (the current one by default); the caller closes it."""
        return Client(server.url if server is not None and server.url else self.url, token, timeout)

    # ------------------------------------------------------------------------------------------- tokens, data
    @property
    def minter(self) -> Minter:
        if self._minter is None:
            self._minter = Minter.for_db(self.db)
        return self._minter

    def token(self, agent_id: str, role: str = "participant", **options: Any) -> str:
        """A real token signed with the database's own key (`Minter.issue` options)."""
        return self.minter(agent_id, role, **options)

    def token_file(self, agent_id: str, token: str | None = None) -> Path:
        """Write the agent's token to tokens/<agent>.token (where the stand-in templates look); its path."""
        path = self.workdir / "tokens" / f"{agent_id}.token"
        path.write_text(token or self.token(agent_id))
        return path

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """A read of the database file from this process (`bridge.testing.database.query`)."""
        return database.query(self.db, sql, params)

    def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        """`query` with each row as a dict of its column names."""
        return database.rows(self.db, sql, params)

    # ------------------------------------------------------------------------------------------- tmux, agents
    @property
    def tmux(self) -> Tmux:
        """The private tmux server (its socket is BRIDGE_TMUX_SOCKET for every child), created on first use."""
        if self._tmux is None:
            self._tmux = private_tmux(self.tmux_socket)
        return self._tmux

    def standin_runtimes(self, *, resume_fails: bool = False, spawn: bool = True) -> Path:
        """Write runtimes.json with `standin_templates` (the stand-in reads BRIDGE_URL, which the worker sets); its
        path (give it to a server as BRIDGE_RUNTIMES_FILE)."""
        templates = standin_templates(self.workdir / "tokens", resume_fails=resume_fails, spawn=spawn)
        path = self.workdir / "runtimes.json"
        path.write_text(json.dumps(templates, indent=2))
        return path

    def standin_argv(self, agent_id: str, *extra: str, server: Proc | None = None) -> list[str]:
        """An interactive stand-in agent talking to a server (the current one by default)."""
        url = server.url if server is not None and server.url else self.url
        return [sys.executable, "-m", "bridge.standin", "--url", url, "--token-file",
                str(self.workdir / "tokens" / f"{agent_id}.token"), "agent", *extra]

    def launch_standin(self, agent_id: str, *extra: str, timeout: float = 20.0) -> str:
        """A stand-in agent in a new window of the workspace's tmux session, heartbeating as managed and idle;
        its pane id."""
        self.token_file(agent_id)
        session = self.settings.workspace_tmux_session
        pane = self.tmux.new_window(session, agent_id, self.standin_argv(agent_id, *extra), cwd=str(self.workdir))
        self.tmux.run("set-option", "-t", session, "history-limit", "50000")
        self.panes[agent_id] = pane
        if not self.tmux.wait_for_text(pane, STANDIN_READY, timeout=timeout):
            raise RuntimeError(f"stand-in {agent_id} did not start: {self.tmux.capture(pane)[-500:]}")
        managed = "SELECT 1 FROM sessions WHERE agent_id = ? AND management_mode = 'managed'"
        if not wait_until(lambda: self.query(managed, (agent_id,)), timeout, 0.02):
            raise RuntimeError(f"stand-in {agent_id} never heartbeated")
        return pane

    def attach_human(self, session: str, window: str) -> Human:
        """A person at the keyboard of `session`, their keys going to `window`; ended by `close()`."""
        human = Human(self.tmux, session, window, env=self.env)
        self.humans.append(human)
        return human

    # ------------------------------------------------------------------------------------------- cleanup
    def close(self) -> list[dict[str, Any]]:
        """Stop everything started here by PID; remove a temporary directory unless `keep`; what was done."""
        done: list[dict[str, Any]] = []
        for human in reversed(self.humans):
            with _noting(done, f"human client pid {human.pid}"):
                done.append({"what": f"human client pid {human.pid}", "exit_code": human.close()})
        self.humans.clear()
        for proc in reversed(self.procs):
            with _noting(done, f"{proc.name} pid {proc.pid}"):
                was_running = proc.alive()
                done.append({"what": f"{proc.name} pid {proc.pid}", "was_running": was_running,
                             "exit_code": proc.stop()})
        self.procs.clear()
        if self._tmux is not None:
            with _noting(done, "tmux server"):
                done.append({"what": f"tmux server -L {self.tmux_socket}", **stop_tmux(self._tmux)})
            self._tmux = None
        if self.owns_workdir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return done


@contextlib.contextmanager
def _noting(done: list[dict[str, Any]], what: str) -> Any:
    """Cleanup goes on whatever one step raises; the problem is recorded."""
    try:
        yield
    except Exception as exc:
        done.append({"what": what, "error": f"{type(exc).__name__}: {exc}"})
