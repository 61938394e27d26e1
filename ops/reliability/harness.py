"""Shared parts of the reliability scenarios: real processes on 127.0.0.1, a client, and a client-side ledger.

For scenario authors (`ops/reliability/<name>.py`, `run(scale, workdir) -> list[Figure]`):

- `Rig(workdir, env=...)`, a context manager: everything it starts is stopped by PID when it exits (SIGCONT first
  for a stopped process, SIGTERM, SIGKILL after a bounded wait; its private tmux server is killed with every pane
  PID it had).
  - `rig.serve(name, env=..., worker=False, db=..., preexec_fn=...)` starts `bridge serve --no-worker` (port 0,
    `synchronous=FULL`, JSON logs to `<workdir>/logs/<name>.log`) and waits for its READY line; the `Proc` it
    returns has `.pid`, `.port`, `.url`, `.alive()`, `.log_text()`. `rig.worker(name, port=...)` starts
    `bridge worker` and waits for its READY line. `rig.kill9(p)`, `rig.stop(p)`, `rig.pause(p)` (SIGSTOP) and
    `rig.cont(p)` (SIGCONT) act on one process by PID.
  - `rig.token(agent_id, role)` signs a real token with the database's own key (after the first `serve`).
  - `rig.query(sql, params)` reads the database file directly (WAL: never blocks the servers).
  - `rig.tmux` is a private tmux server (`-L bridge-rel-<hex>`), passed to every process as BRIDGE_TMUX_SOCKET.
  - `rig.env` is the child environment: no inherited `BRIDGE_*`, the drills' FAST_TIMINGS, the private tmux
    socket, `BRIDGE_SYNCHRONOUS=FULL`, plus `env`. `NO_LIMITS` switches off the write quota, the loop guard and
    the trigger storm guard (load scenarios; leave them on to measure them).
- `Client(port, token)`: one keep-alive HTTP/1.1 connection; `call(command, payload)` / `get(path)` return a
  `Reply` and never raise for a network failure. `Reply.sent` is False only when the connection was refused (the
  request certainly did nothing); any other failure leaves the request *in doubt*.
- `Ledger`: what clients were told. Record every post (`attempt`, then `acked` / `refused` / `in_doubt`), read
  every thread back (`read_thread`), and `audit(...)` compares: acknowledged posts missing or changed, seq gaps,
  duplicates, refused posts that were committed anyway, messages nobody sent. The message body starts with the
  idempotency key, which is how a message is matched to its post.
- `wait_until(predicate, timeout)` polls (bounded).

Nothing here trusts the server's own account: figures come from the ledger and from reading data back.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bridge_ops.drills.framework import FAST_TIMINGS, EnvelopeReader
from bridge_ops.stack import HOST, bridge_argv, clean_env, pid_alive

T = TypeVar("T")
NO_LIMITS = {"BRIDGE_WRITE_QUOTA_PER_MIN": "0", "BRIDGE_LOOP_GUARD_TURNS": "0", "BRIDGE_LOOP_GUARD_REPEATS": "0",
             "BRIDGE_TRIGGER_RATE_PER_MIN": "0"}
_READY_SERVE = re.compile(r"READY http://[0-9.]+:(\d+)")
_READY_WORKER = re.compile(r"READY worker (\S+)")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------- processes
@dataclass
class Proc:
    """A `bridge serve` / `bridge worker` (or other) child process, stopped by PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    ready: str | None = None  # the READY value (a worker's id)
    paused: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The process's JSON log lines with this `event`."""
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == event:
                        found.append(entry)
        return found


class Rig:
    """Processes, tokens and a private tmux server for one scenario run (see the module docstring)."""

    def __init__(self, workdir: Path, env: Mapping[str, str] | None = None, *, db: Path | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.db = Path(db) if db is not None else self.workdir / "bridge.db"
        self.procs: list[Proc] = []
        self._tmux: Any = None
        self.tmux_socket = f"bridge-rel-{secrets.token_hex(4)}"
        self.env = clean_env({**FAST_TIMINGS, "BRIDGE_TMUX_SOCKET": self.tmux_socket, "BRIDGE_LOG_LEVEL": "WARNING",
                              **(env or {}), "BRIDGE_SYNCHRONOUS": "FULL"})
        self.env.pop("TMUX", None)
        self.env.pop("TMUX_PANE", None)
        self._key: Any = None
        self._conn: Any = None

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- starting
    def start(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None) -> Proc:
        """Start any child process (own session, stdin from /dev/null, output to logs/<name>.log)."""
        log_path = self.workdir / "logs" / f"{name}.log"
        with open(log_path, "ab") as log:  # the child holds its own descriptor
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(self.workdir),
                                     env={**self.env, **(env or {})}, start_new_session=True,
                                     preexec_fn=preexec_fn)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def _wait_ready(self, proc: Proc, pattern: re.Pattern[str], offset: int, timeout: float) -> str:
        def ready() -> str | None:
            match = pattern.search(proc.log_text()[offset:])
            return match.group(1) if match else None

        value = wait_until(lambda: ready() or not proc.alive(), timeout, 0.02)
        found = ready()
        if not value or found is None:
            self.stop(proc)
            raise RuntimeError(f"{proc.name} did not become ready (exit {proc.popen.returncode}): "
                               f"{proc.log_text()[offset:][-2000:]}")
        return found

    def serve(self, name: str = "server", *, env: Mapping[str, str] | None = None, worker: bool = False,
              db: Path | None = None, port: int = 0, preexec_fn: Callable[[], None] | None = None,
              timeout: float = 60.0) -> Proc:
        """`bridge serve --host 127.0.0.1 --port <port, default 0: any> --db <db> [--no-worker]`, ready."""
        log_path = self.workdir / "logs" / f"{name}.log"
        offset = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
        argv = bridge_argv("serve", "--host", HOST, "--port", str(port), "--db", str(db or self.db),
                           *([] if worker else ["--no-worker"]))
        proc = self.start(name, argv, env=env, preexec_fn=preexec_fn)
        proc.port = int(self._wait_ready(proc, _READY_SERVE, offset, timeout))
        return proc

    def worker(self, name: str = "worker", *, port: int | None = None, env: Mapping[str, str] | None = None,
               timeout: float = 60.0) -> Proc:
        """`bridge worker --db <db> --port <port>` (the API's port, given to spawned agents), ready."""
        log_path = self.workdir / "logs" / f"{name}.log"
        offset = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
        argv = bridge_argv("worker", "--db", str(self.db), "--host", HOST, *(["--port", str(port)] if port else []))
        proc = self.start(name, argv, env=env)
        proc.ready = self._wait_ready(proc, _READY_WORKER, offset, timeout)
        return proc

    # ------------------------------------------------------------------------------------------- faults
    def kill9(self, proc: Proc) -> None:
        """`kill -9 <pid>`: no shutdown code runs; reaped."""
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def pause(self, proc: Proc) -> None:
        """SIGSTOP: the process stops where it is (mid-job, holding whatever it claimed)."""
        os.kill(proc.pid, signal.SIGSTOP)
        proc.paused = True

    def cont(self, proc: Proc) -> None:
        """SIGCONT: the stopped process carries on from where it was."""
        os.kill(proc.pid, signal.SIGCONT)
        proc.paused = False

    def stop(self, proc: Proc, timeout: float = 15.0) -> int | None:
        """SIGTERM (after SIGCONT if stopped), bounded wait, then SIGKILL; reaped; the exit code."""
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                if proc.paused:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.paused = False
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        return proc.popen.wait(timeout=30)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Read the database file from this process (its own apsw connection: WAL readers never block writers)."""
        if self._conn is None:
            from bridge.store.db import connect

            self._conn = connect(self.db)
        return [tuple(row) for row in self._conn.execute(sql, params).fetchall()]

    # ------------------------------------------------------------------------------------------- tokens, tmux
    def token(self, agent_id: str, role: str = "participant", *, session_id: str | None = None,
              ttl: float = 3600) -> str:
        """A token signed with the key the server created next to the database."""
        from bridge.auth.keys import load_or_create
        from bridge.auth.tokens import issue_token
        from bridge.settings import Settings

        settings = Settings.load({"db": str(self.db)}, env={})
        if self._key is None:
            self._key = load_or_create(settings.data_dir)
        return issue_token(self._key, issuer=settings.issuer, audience=settings.audience, agent_id=agent_id,
                           role=role, workspace_id=settings.workspace, session_id=session_id or f"{agent_id}-s1",
                           ttl=ttl)[0]

    @property
    def tmux(self) -> Any:
        """The private tmux server (`bridge.worker.tmux.Tmux`), created on first use."""
        if self._tmux is None:
            from bridge.worker.tmux import Tmux

            if not Tmux.available():
                raise RuntimeError("tmux is not installed (apt-get install tmux)")
            self._tmux = Tmux(self.tmux_socket)
        return self._tmux

    def new_window(self, window: str, argv: list[str], *, session: str = "bridge-default",
                   env: Mapping[str, str] | None = None) -> str:
        """Start `argv` in a new window of the private tmux server; return its pane id (`%N`)."""
        return str(self.tmux.new_window(session, window, argv, cwd=str(self.workdir), env=env))

    # ------------------------------------------------------------------------------------------- cleanup
    def close(self) -> None:
        """Stop every process by PID (newest first), then the tmux server and every pane process."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        if self._tmux is not None:
            _stop_tmux(self._tmux)


def _stop_tmux(tmux: Any) -> None:
    from bridge.worker.tmux import TmuxError

    pids: list[int] = []
    with contextlib.suppress(TmuxError, ValueError):
        pids.append(int(tmux.run("display-message", "-p", "#{pid}").strip()))
        pids += [int(p) for p in tmux.run("list-panes", "-a", "-F", "#{pane_pid}").split()]
    tmux.kill_server()
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5.0)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------- the client
@dataclass
class Reply(EnvelopeReader):
    """One exchange as the client saw it. `status` None: no HTTP answer (`sent` False: connection refused)."""

    status: int | None
    body: Any = None
    error: str | None = None
    sent: bool = True
    ms: float = 0.0
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200



class Client:
    """One keep-alive HTTP/1.1 connection to a bridge; reconnects after any failure; never raises for the network."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30.0):
        self.port, self.timeout = port, timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn: http.client.HTTPConnection | None = None

    def exchange(self, method: str, path: str, payload: Any = None) -> Reply:
        headers = dict(self.headers)
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=headers)
            raw = self.conn.getresponse()
            data = raw.read()
        except ConnectionRefusedError as exc:
            self.close()
            return Reply(None, error=f"{type(exc).__name__}: {exc}", sent=False,
                         ms=(time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Reply(None, error=f"{type(exc).__name__}: {exc}", ms=(time.perf_counter() - started) * 1000)
        ms = (time.perf_counter() - started) * 1000
        try:
            decoded: Any = json.loads(data) if data else None
        except ValueError:
            decoded = data.decode("utf-8", "replace")
        if raw.getheader("Connection", "").lower() == "close":
            self.close()
        return Reply(raw.status, decoded, ms=ms, retry_after=raw.getheader("Retry-After"))

    def call(self, command: str, payload: dict[str, Any]) -> Reply:
        """POST /v1/mcp/<command>."""
        return self.exchange("POST", f"/v1/mcp/{command}", payload)

    def get(self, path: str) -> Reply:
        return self.exchange("GET", path)

    def ok(self, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A call that must succeed (set-up and read-back steps): its body, else RuntimeError. A call that got no
        answer is sent again on a fresh connection (up to 3 times: a kept-alive connection to a server that has
        since restarted fails once), so use it only where a repeat is harmless."""
        reply = self.call(command, payload)
        for _ in range(2):
            if reply.status is not None:
                break
            reply = self.call(command, payload)
        if not reply.ok:
            raise RuntimeError(f"{command} -> {reply.status}: {reply.body or reply.error}")
        body: dict[str, Any] = reply.body
        return body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def read_thread(client: Client, thread_id: str) -> list[dict[str, Any]]:
    """Every message of a thread, paged from seq 0 (RuntimeError when a page fails)."""
    messages: list[dict[str, Any]] = []
    since = 0
    while True:
        page = client.ok("read_messages", {"thread_id": thread_id, "since_seq": since, "limit": 200})
        messages += page["messages"]
        since = page["next_seq"]
        if not page["has_more"]:
            return messages


# --------------------------------------------------------------------------------------------------- the ledger
@dataclass
class Post:
    """One post as its client knows it."""

    key: str
    thread_id: str
    body: str
    acked: dict[str, Any] | None = None  # {"seq", "message_id"} of the first 200
    refusals: list[str] = field(default_factory=list)  # "<status> <code>/<reason>" of each refusal
    in_doubt: int = 0  # attempts that got no answer after the request may have been sent
    replayed_after_doubt: bool = False  # a retry after no answer was a replay: it had committed unacknowledged


@dataclass
class Audit:
    """What the read-back shows against the ledger."""

    acked: int
    lost: list[str]  # keys acknowledged but missing (or changed) in the read-back
    gaps: int  # seqs missing from 1..latest, over all threads
    duplicates: int  # messages beyond the first for one key
    refused_committed: list[str]  # keys only ever refused (never acked, never in doubt) that were committed
    unexpected: int  # messages whose key no client used
    messages: int
    committed_unacked: int  # in-doubt posts whose retry was a replay


class Ledger:
    """The clients' record of every post (thread-safe). Bodies start with the idempotency key."""

    def __init__(self) -> None:
        self.posts: dict[str, Post] = {}
        self._lock = threading.Lock()

    @staticmethod
    def body(key: str, filler: str = "") -> str:
        return f"{key} {filler}".rstrip()

    def attempt(self, key: str, thread_id: str, body: str) -> Post:
        with self._lock:
            return self.posts.setdefault(key, Post(key, thread_id, body))

    def record(self, key: str, reply: Reply) -> str:
        """File a reply; return "acked", "refused", "in_doubt" or "not_sent"."""
        with self._lock:
            post = self.posts[key]
            if reply.ok:
                if post.acked is None:
                    post.acked = {"seq": reply.body["seq"], "message_id": reply.body["message_id"]}
                    post.replayed_after_doubt = bool(post.in_doubt and reply.body.get("replayed"))
                return "acked"
            if reply.status is not None:
                post.refusals.append(f"{reply.status} {reply.code}/{reply.reason}")
                return "refused"
            if reply.sent:
                post.in_doubt += 1
                return "in_doubt"
            return "not_sent"

    def acked_keys(self) -> list[str]:
        return [k for k, p in self.posts.items() if p.acked is not None]

    def audit(self, threads: Mapping[str, list[dict[str, Any]]]) -> Audit:
        """Compare the read-back (every message of every thread the ledger used) with what clients were told."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        gaps = unexpected = total = 0
        for messages in threads.values():
            seqs = [m["seq"] for m in messages]
            total += len(messages)
            gaps += (max(seqs) - len(set(seqs))) if seqs else 0
            for m in messages:
                key = str(m.get("body", "")).split(" ", 1)[0]
                if key in self.posts:
                    by_key.setdefault(key, []).append(m)
                elif m.get("kind") != "system":
                    unexpected += 1
        lost = []
        for key, post in self.posts.items():
            found = by_key.get(key, [])
            if post.acked is not None and not any(
                    m["message_id"] == post.acked["message_id"] and m["seq"] == post.acked["seq"]
                    and m["body"] == post.body and m["thread_id"] == post.thread_id for m in found):
                lost.append(key)
        refused_committed = [k for k, p in self.posts.items()
                             if p.acked is None and not p.in_doubt and p.refusals and by_key.get(k)]
        return Audit(acked=len(self.acked_keys()), lost=lost, gaps=gaps,
                     duplicates=sum(len(v) - 1 for v in by_key.values()), refused_committed=refused_committed,
                     unexpected=unexpected, messages=total,
                     committed_unacked=sum(1 for p in self.posts.values() if p.replayed_after_doubt))


@contextlib.contextmanager
def clients(port: int, tokens: list[str]) -> Iterator[list[Client]]:
    """One client per token, closed afterwards."""
    made = [Client(port, t) for t in tokens]
    try:
        yield made
    finally:
        for c in made:
            c.close()
