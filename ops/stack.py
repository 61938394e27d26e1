"""A real bridge stack for the ops tools (SLI harness, readiness): nothing in-process, nothing in memory.

`real_stack()` starts, in a working directory: `bridge serve` as a child process (waitress on 127.0.0.1, port 0,
the supervisor worker in the same process, a database file with `synchronous=FULL`), a private tmux server
(`tmux -L bridge-ops-<random>`) that the worker types into, and, on demand, stand-in agents
(`python -m bridge.standin agent`) in its panes. The worker's resume/spawn templates are the stand-in too, so a
fallback also completes. Tokens are minted with the key the server created next to its database.

Everything started is stopped by PID on exit: the server (SIGTERM, then SIGKILL), then the tmux server
(`kill-server`, then SIGKILL of its recorded PID and of every recorded pane PID still alive).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from bridge.auth.keys import SigningKey, load_or_create
from bridge.auth.tokens import issue_token
from bridge.settings import Settings
from bridge.store.db import connect
from bridge.worker.tmux import Tmux, TmuxError

if TYPE_CHECKING:  # bridge_ops.load pulls in multiprocessing: not on every `bridge` start
    from bridge_ops.load import KeepAliveClient

HOST = "127.0.0.1"
_READY = re.compile(r"READY http://([0-9.]+):(\d+)")


def bridge_argv(*args: str) -> list[str]:
    """`bridge <args>` as this interpreter runs it (the console script may not be on PATH)."""
    return [sys.executable, "-m", "bridge", *args]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any BRIDGE_* variable (a stray one must not redirect the stack), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(extra or {})
    return env


def standin_runtimes(token_dir: Path) -> dict[str, Any]:
    """`generic` resume/spawn templates running the stand-in (the worker passes BRIDGE_URL to them)."""
    base = [sys.executable, "-m", "bridge.standin", "--token-file", f"{token_dir}/{{agent_id}}.token"]
    return {"generic": {"resume": [*base, "resume", "{session_id}", "{prompt}"],
                        "spawn": [*base, "agent", "--first-prompt", "{prompt}"]}}


def pid_alive(pid: int) -> bool:
    """True while a process with this PID exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


@dataclass
class Stack:
    """A running stack: where it listens, its files, and helpers to mint tokens, call it and read its database."""

    workdir: Path
    db: Path
    port: int
    server: subprocess.Popen[bytes]
    server_env: dict[str, str]
    log_path: Path
    tmux: Tmux
    token_dir: Path
    settings: Settings
    key: SigningKey
    panes: dict[str, str] = field(default_factory=dict)  # agent id -> pane id of its stand-in
    tmux_pid: int | None = None
    pane_pids: dict[str, int] = field(default_factory=dict)
    _conn: apsw.Connection | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def token(self, agent_id: str, role: str = "participant", *, session_id: str | None = None,
              ttl: float = 3600, workspace: str | None = None) -> str:
        """A real EdDSA token signed with the server's own key."""
        return issue_token(self.key, issuer=self.settings.issuer, audience=self.settings.audience,
                           agent_id=agent_id, role=role, workspace_id=workspace or self.settings.workspace,
                           session_id=session_id or f"{agent_id}-s1", ttl=ttl)[0]

    def client(self, token: str | None = None, timeout: float = 30.0) -> KeepAliveClient:
        """A keep-alive HTTP/1.1 client of this server (the caller closes it)."""
        from bridge_ops.load import KeepAliveClient

        return KeepAliveClient(HOST, self.port, token, timeout=timeout)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Read the server's database file from this process (its own apsw connection; WAL readers never block)."""
        if self._conn is None:
            self._conn = connect(self.db)
        return self._conn.execute(sql, params).fetchall()

    def launch_standin(self, agent_id: str, *, reply: str | None = None, timeout: float = 20.0) -> str:
        """A stand-in agent in a new window of the workspace's tmux session, heartbeating as managed and idle."""
        token_file = self.token_dir / f"{agent_id}.token"
        token_file.write_text(self.token(agent_id))
        argv = [sys.executable, "-m", "bridge.standin", "--url", self.url, "--token-file", str(token_file), "agent",
                *(["--reply", reply] if reply else [])]
        session = self.settings.workspace_tmux_session
        pane = self.tmux.new_window(session, agent_id, argv)
        self.tmux.run("set-option", "-t", session, "history-limit", "50000")
        if self.tmux_pid is None:
            self.tmux_pid = int(self.tmux.run("display-message", "-p", "#{pid}").strip())
        self.pane_pids[agent_id] = int(self.tmux.run("display-message", "-p", "-t", pane, "#{pane_pid}").strip())
        self.panes[agent_id] = pane
        if not self.tmux.wait_for_text(pane, "STANDIN READY", timeout=timeout):
            raise RuntimeError(f"stand-in {agent_id} did not start: {self.tmux.capture(pane)[-500:]}")
        deadline = time.monotonic() + timeout
        while not self.query("SELECT 1 FROM sessions WHERE agent_id = ? AND management_mode = 'managed'",
                             (agent_id,)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"stand-in {agent_id} never heartbeated")
            time.sleep(0.02)
        return pane

    def run_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `bridge <args>` as an operator would, in a clean environment; the caller passes `--db`."""
        return subprocess.run(bridge_argv(*args), capture_output=True, text=True, timeout=timeout,
                              env=clean_env(), cwd=str(self.workdir), check=False)

    def describe(self) -> dict[str, Any]:
        """Evidence of what is running: processes, addresses, files, durability, panes."""
        pragmas = {name: self.query(f"PRAGMA {name}")[0][0] for name in ("journal_mode", "user_version")}
        try:
            cmdline = Path(f"/proc/{self.server.pid}/cmdline").read_bytes().split(b"\0")
            server_cmd = " ".join(part.decode(errors="replace") for part in cmdline if part)
        except OSError:
            server_cmd = None
        return {
            "url": self.url, "server_pid": self.server.pid, "server_cmdline": server_cmd,
            "server_env": self.server_env, "synchronous": self.server_env.get("BRIDGE_SYNCHRONOUS", "FULL"),
            "db": str(self.db), "db_bytes": self.db.stat().st_size if self.db.exists() else 0,
            "wal_bytes": wal.stat().st_size if (wal := self.db.with_name(self.db.name + "-wal")).exists() else 0,
            "journal_mode": pragmas["journal_mode"], "schema_version": pragmas["user_version"],
            "tmux_socket": self.tmux.socket_name, "tmux_server_pid": self.tmux_pid,
            "standins": [{"agent_id": a, "pane": p, "pid": self.pane_pids.get(a)} for a, p in self.panes.items()],
        }

    def close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _start_server(workdir: Path, env: dict[str, str], log_path: Path, ready_timeout: float,
                  ) -> tuple[subprocess.Popen[bytes], int]:
    with open(log_path, "wb") as log:  # the child holds its own descriptor: no pipe to drain
        proc = subprocess.Popen(bridge_argv("serve", "--host", HOST, "--port", "0", "--db", str(workdir / "bridge.db")),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(workdir))
    deadline = time.monotonic() + ready_timeout
    while True:
        match = _READY.search(log_path.read_text(errors="replace"))
        if match:
            return proc, int(match.group(2))
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"bridge serve did not become ready (exit {proc.returncode}): "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child by PID, SIGKILL it if it has not exited in time, and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _stop_tmux(stack: Stack) -> None:
    pids = [p for p in (stack.tmux_pid, *stack.pane_pids.values()) if p is not None]
    with contextlib.suppress(TmuxError):  # panes the worker spawned have PIDs we never recorded: the server goes
        pids += [int(p) for p in stack.tmux.run("list-panes", "-a", "-F", "#{pane_pid}").split()]
    stack.tmux.kill_server()
    for pid in _wait_gone(sorted(set(pids)), 5.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, 5.0)


@contextlib.contextmanager
def real_stack(workdir: Path | None = None, *, env: Mapping[str, str] | None = None,
               ready_timeout: float = 60.0) -> Iterator[Stack]:
    """Start the stack (in `workdir`, else a temporary directory); stop everything by PID on exit.

    `env` adds `BRIDGE_*` settings for the server (bridge/settings.py defaults otherwise; durability is always FULL).
    """
    if not Tmux.available():
        raise RuntimeError("tmux is not installed: the wake pipeline needs it (apt-get install tmux)")
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bridge-ops-")))
        workdir.mkdir(parents=True, exist_ok=True)
        token_dir = workdir / "tokens"
        token_dir.mkdir(exist_ok=True)
        runtimes = workdir / "runtimes.json"
        runtimes.write_text(json.dumps(standin_runtimes(token_dir), indent=2))
        tmux = Tmux(f"bridge-ops-{secrets.token_hex(4)}")
        server_env = {"BRIDGE_TMUX_SOCKET": tmux.socket_name or "", "BRIDGE_RUNTIMES_FILE": str(runtimes),
                      "BRIDGE_LOG_LEVEL": "WARNING", **(env or {}), "BRIDGE_SYNCHRONOUS": "FULL"}
        log_path = workdir / "server.log"
        proc, port = _start_server(workdir, clean_env(server_env), log_path, ready_timeout)
        db = workdir / "bridge.db"
        try:
            settings = Settings.load({"db": str(db)}, env={})
            stack = Stack(workdir=workdir, db=db, port=port, server=proc, server_env=server_env, log_path=log_path,
                          tmux=tmux, token_dir=token_dir, settings=settings, key=load_or_create(settings.data_dir))
        except BaseException:
            stop_process(proc)
            raise
        try:
            yield stack
        finally:
            stack.close_db()
            stop_process(proc)
            _stop_tmux(stack)
