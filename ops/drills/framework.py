"""The drill framework: a real bridge stack in a temporary directory, a fault, the runbook's commands, evidence.

A drill runs inside a `DrillContext`:

- a fresh temporary directory (the working directory of every command, so runbook commands such as
  `bridge freeze --db ./bridge.db` run verbatim), a private tmux server (`BRIDGE_TMUX_SOCKET=bridge-drill-<hex>`) and
  an environment without any inherited `BRIDGE_*` variable, plus small wake timings so a drill takes seconds;
- `serve()` / `worker()` start `bridge serve` / `bridge worker` subprocesses on 127.0.0.1, port 0, logging JSON lines
  to a file; `bridge(...)` runs one `bridge` CLI command to completion and records its exit code and output;
- `api()`, `http()` and `metric()` talk to a server over HTTP (stdlib only: the drills ship with the product);
- `fault()`, `observe()`, `check()` and `step()` write the evidence timeline; a failed `check()` ends the drill.

Whatever happens (a failed check, an exception, Ctrl-C), `close()` stops every process the drill started, by PID
(SIGTERM, then SIGKILL after a bounded wait), kills the private tmux server, and writes the evidence record as JSON:
timestamps, every command with its exit code and output, every observation and check, and `pass`.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import platform
import pty
import re
import secrets
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

# Small wake timings so every branch runs in seconds (the defaults are in bridge/settings.py).
FAST_TIMINGS = {
    "BRIDGE_ACK_TIMEOUT": "1500ms", "BRIDGE_QUIET_WINDOW": "1s", "BRIDGE_DEFER_RECHECK": "200ms",
    "BRIDGE_MAX_DEFER": "3s", "BRIDGE_WORKER_POLL": "200ms", "BRIDGE_WORKER_LEASE": "5s",
    "BRIDGE_COMMAND_TIMEOUT": "20s",
}
DB = "./bridge.db"  # relative to the drill's directory, exactly as the runbooks write it
OUTPUT_LIMIT = 4000  # characters of a command's stdout/stderr kept in the evidence
_READY_SERVE = re.compile(r"READY (http://\S+)")
_READY_WORKER = re.compile(r"READY worker (\S+)")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class DrillFailed(Exception):
    """A check of the drill did not hold (or a step could not be carried out)."""


def now_iso() -> str:
    """UTC now with milliseconds and `Z` (the bridge's wire format)."""
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _clip(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Bounded, and without bearer tokens: the evidence may be shared, a token must not be."""
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def redact(text: str) -> str:
    """Replace every JWT in `text` by `<jwt:…last 6 chars>`."""
    return _JWT.sub(lambda m: f"<jwt:...{m.group(0)[-6:]}>", text)


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """The decoded header (0) or claims (1) of a JWT, unverified (to diagnose, never to trust)."""
    import base64

    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def display(argv: Sequence[str]) -> str:
    """An argv as a shell line, with this interpreter shown as `python` and `python -m bridge` as `bridge`."""
    words = [("python" if a == sys.executable else a) for a in argv]
    if words[:3] == ["python", "-m", "bridge"]:
        words = ["bridge", *words[3:]]
    return shlex.join(words)


@dataclass(frozen=True)
class Drill:
    """One drill: the runbook it proves, what it injects and verifies, and the function that runs it."""

    name: str
    title: str
    runbook: str
    injects: str
    verifies: str
    run: Callable[[DrillContext], None]


@dataclass
class CommandResult:
    """A finished `bridge ...` (or other) command."""

    display: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    def json(self) -> Any:
        """stdout parsed as JSON (commands run with `--json`)."""
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The JSON error document a `--json` command wrote to stderr."""
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]


class EnvelopeReader:
    """Reads the bridge's error envelope out of a decoded response `body`."""

    body: Any

    @property
    def code(self) -> str | None:
        """The error envelope's code (None on success or when there is no envelope)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    @property
    def reason(self) -> str | None:
        """`error.details.reason` of an error envelope."""
        if self.code is None:
            return None
        return (self.body["error"].get("details") or {}).get("reason")


@dataclass
class HttpReply(EnvelopeReader):
    """One HTTP exchange: status (None when the connection failed), lower-case headers, decoded body."""

    status: int | None
    headers: dict[str, str]
    body: Any
    error: str | None = None


class Process:
    """A long-running child process of the drill (server, worker, lock holder, ...), stopped by PID."""

    def __init__(self, ctx: DrillContext, name: str, argv: list[str], log_path: Path, env: dict[str, str],
                 stdin: int | IO[Any] | None = subprocess.DEVNULL):
        self.ctx, self.name, self.argv, self.log_path = ctx, name, argv, log_path
        self.display = display(argv)
        self.url: str | None = None
        self.ready_value: str | None = None
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.log_offset = self._log.tell()
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, cwd=ctx.root, env=env, stdin=stdin, stdout=self._log, stderr=self._log, start_new_session=True)
        except OSError:
            self._log.close()
            raise
        self.pid = self.proc.pid
        self.started_at = now_iso()
        self.record: dict[str, Any] = {"name": name, "pid": self.pid, "command": self.display,
                                       "log": str(log_path), "started_at": self.started_at}
        ctx.evidence["processes"].append(self.record)
        ctx._add("process", f"started {name} (pid {self.pid})", command=self.display, pid=self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, pattern: re.Pattern[str], timeout: float = 30.0) -> str:
        """Wait (bounded) for the READY line; return its first group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search(self.log_text(since_start=True))
            if match:
                self.ready_value = match.group(1)
                return match.group(1)
            if not self.alive():
                break
            time.sleep(0.02)
        raise DrillFailed(f"{self.name} did not become ready; log:\n{_clip(self.log_text(since_start=True))}")

    def log_text(self, since_start: bool = False) -> str:
        """What the process wrote (stdout and stderr); since this start only with `since_start`."""
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
            if event is not None and entry.get("event") != event:
                continue
            if all(entry.get(k) == v for k, v in match.items()):
                found.append(entry)
        return found

    def kill9(self) -> None:
        """`kill -9 <pid>`: a crash, no shutdown code runs."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self._reap(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """`kill <pid>` (SIGTERM), wait (bounded), SIGKILL if still running; always reaped. Returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                assert self.proc is not None
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        return self._reap(10)

    def _reap(self, timeout: float) -> int | None:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                code = self.proc.wait(timeout=timeout)
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            self.proc = None
            self.record.update(stopped_at=now_iso(), exit_code=code)
        if self._log is not None and not self._log.closed:
            self._log.close()
        return code

    @property
    def host_port(self) -> tuple[str, int]:
        match = re.match(r"http://([^:/]+):(\d+)", self.url or "")
        if not match:
            raise DrillFailed(f"{self.name} has no URL")
        return match.group(1), int(match.group(2))


class Human:
    """A person at the keyboard: a real tmux client attached in a pseudo-terminal; bytes written are key presses."""

    def __init__(self, ctx: DrillContext, session: str, window: str):
        ctx.tmux("select-window", "-t", window)  # their keys go to this window, not to an agent's pane
        self.ctx = ctx
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        argv = ["tmux", "-L", ctx.tmux_socket, "attach-session", "-t", session]
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, stdin=self.slave, stdout=self.slave, stderr=self.slave, env={**ctx.env, "TERM": "xterm"},
                start_new_session=True)
        except OSError:
            os.close(self.slave)
            os.close(self.master)
            raise
        self.pid = self.proc.pid
        self.record = {"name": "human-tmux-client", "pid": self.pid, "command": display(argv), "started_at": now_iso()}
        ctx.evidence["processes"].append(self.record)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._typer: threading.Thread | None = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ctx.tmux("list-clients", "-t", session, "-F", "#{client_pid}"):
            time.sleep(0.02)

    def _drain(self) -> None:
        """Read the client's screen output so it never blocks on a full pty."""
        while True:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def keep_typing(self, interval: float = 0.15) -> None:
        """Type in the background until `stop_typing()`."""
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

    def close(self) -> None:
        """Stop typing, end the client by PID, close the terminal."""
        self.stop_typing()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.record.update(stopped_at=now_iso(), exit_code=self.proc.returncode)
            self.proc = None
            os.close(self.slave)
            self._reader.join(timeout=5)
            os.close(self.master)


class DrillContext:
    """Everything one drill run owns: a temp directory, processes, a private tmux server and the evidence."""

    def __init__(self, drill: Drill, out_dir: Path | str | None = None, *, keep: bool = False,
                 env: dict[str, str] | None = None):
        self.drill = drill
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix=f"bridge-drill-{drill.name}-"))
        (self.root / "logs").mkdir()
        (self.root / "tokens").mkdir()
        self.tmux_socket = f"bridge-drill-{secrets.token_hex(4)}"
        repo = str(Path(__file__).resolve().parents[2])
        # no inherited BRIDGE_* setting, and no TMUX/TMUX_PANE: a drill run from inside tmux must not let a stand-in
        # believe it runs in the operator's pane
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith("BRIDGE_") and k not in ("TMUX", "TMUX_PANE")}
        inherited["PYTHONPATH"] = os.pathsep.join(p for p in (repo, inherited.get("PYTHONPATH")) if p)
        self.settings = {**FAST_TIMINGS, "BRIDGE_TMUX_SOCKET": self.tmux_socket, **(env or {})}
        self.env = {**inherited, **self.settings}
        self.processes: list[Process] = []
        self.humans: list[Human] = []
        self.server: Process | None = None
        self._started = time.monotonic()
        self._tmux_pid: int | None = None
        import bridge

        self.evidence: dict[str, Any] = {
            "drill": drill.name, "title": drill.title, "runbook": drill.runbook, "injects": drill.injects,
            "verifies": drill.verifies, "started_at": now_iso(), "finished_at": None, "duration_seconds": None,
            "pass": False, "failure": None,
            "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                            "bridge_version": bridge.__version__, "workdir": str(self.root),
                            "tmux_socket": self.tmux_socket, "settings": dict(self.settings)},
            "timeline": [], "commands": [], "observations": [], "checks": [], "processes": [], "cleanup": [],
        }

    # ------------------------------------------------------------------------------------------- evidence
    def _add(self, kind: str, what: str, **data: Any) -> dict[str, Any]:
        entry = {"at": now_iso(), "t": round(time.monotonic() - self._started, 3), "type": kind, "what": what,
                 **data}
        self.evidence["timeline"].append(entry)
        return entry

    def step(self, title: str) -> None:
        """A runbook step begins (Detect, Diagnose, Recover, Verify ...)."""
        self._add("step", title)

    def fault(self, what: str, **data: Any) -> None:
        """Record the fault being injected (call it right before injecting)."""
        self._add("fault", what, **data)

    def observe(self, what: str, **data: Any) -> None:
        """Record something seen (a metric value, a log event, a state)."""
        self.evidence["observations"].append(self._add("observation", what, **data))

    def check(self, ok: Any, what: str, **data: Any) -> None:
        """Record a verification; a false one fails the drill at once."""
        entry = self._add("check", what, ok=bool(ok), **data)
        self.evidence["checks"].append(entry)
        if not ok:
            raise DrillFailed(f"check failed: {what} {json.dumps(data, default=str)[:1500]}")

    # ------------------------------------------------------------------------------------------- commands
    def run(self, argv: Sequence[str], *, expect: int | None = 0, timeout: float = 60.0,
            env: dict[str, str] | None = None, input_text: str | None = None) -> CommandResult:
        """Run a command to completion (bounded) in the drill directory; record it; check its exit code."""
        argv = list(argv)
        started = time.monotonic()
        at = now_iso()
        try:
            done = subprocess.run(argv, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                                  text=True, timeout=timeout, check=False, input=input_text,
                                  stdin=None if input_text is not None else subprocess.DEVNULL)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = -1, _text(exc.stdout), _text(exc.stderr) + f"\n[timed out after {timeout:g}s]"
        result = CommandResult(display(argv), code, out, err, round(time.monotonic() - started, 3))
        entry = {"at": at, "t": round(started - self._started, 3), "type": "command", "what": redact(result.display),
                 "exit_code": code, "duration_seconds": result.duration, "stdout": _clip(out), "stderr": _clip(err)}
        if env:
            entry["env"] = env
        self.evidence["timeline"].append(entry)
        self.evidence["commands"].append(entry)
        if expect is not None and code != expect:
            raise DrillFailed(f"`{result.display}` exited {code}, expected {expect}:\n{_clip(err or out, 1500)}")
        return result

    def bridge(self, *args: str, expect: int | None = 0, timeout: float = 60.0,
               env: dict[str, str] | None = None) -> CommandResult:
        """`bridge <args>` (as `python -m bridge`, this interpreter) in the drill directory."""
        return self.run([sys.executable, "-m", "bridge", *args], expect=expect, timeout=timeout, env=env)

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              stdin: int | IO[Any] | None = subprocess.DEVNULL) -> Process:
        """Start a long-running process (stopped by PID at the end of the drill at the latest)."""
        proc = Process(self, name, list(argv), self.root / "logs" / f"{name}.log", {**self.env, **(env or {})},
                       stdin=stdin)
        self.processes.append(proc)
        return proc

    def serve(self, name: str = "server", *args: str, worker: bool = True, env: dict[str, str] | None = None,
              timeout: float = 30.0) -> Process:
        """`bridge serve --db ./bridge.db --port 0 [--no-worker] ...`; waits for READY; becomes the current server."""
        argv = [sys.executable, "-m", "bridge", "serve", "--db", DB, "--port", "0",
                *([] if worker else ["--no-worker"]), *args]
        proc = self.start(name, argv, env=env)
        proc.url = proc.wait_ready(_READY_SERVE, timeout)
        self._add("process", f"{name} ready at {proc.url}", pid=proc.pid)
        self.server = proc
        return proc

    def worker(self, name: str = "worker", *args: str, env: dict[str, str] | None = None) -> Process:
        """`bridge worker --db ./bridge.db --port <server port> ...` (the port is given to spawned agents)."""
        port = str(self.server.host_port[1]) if self.server is not None else "8765"
        argv = [sys.executable, "-m", "bridge", "worker", "--db", DB, "--port", port, *args]
        proc = self.start(name, argv, env=env)
        proc.wait_ready(_READY_WORKER)
        self._add("process", f"{name} ready", pid=proc.pid)
        return proc

    # ------------------------------------------------------------------------------------------- HTTP
    def http(self, method: str, path: str, *, token: str | None = None, body: Any = None,
             server: Process | None = None, timeout: float = 30.0, record: bool = True,
             headers: dict[str, str] | None = None) -> HttpReply:
        """One request to a server (the current one by default); a refused connection is a reply with no status."""
        target = server or self.server
        if target is None:
            raise DrillFailed("no server to talk to")
        host, port = target.host_port
        send = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            send["Content-Type"] = "application/json"
        if token is not None:
            send["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=payload, headers=send)
            raw = conn.getresponse()
            data = raw.read()
            reply_headers = {k.lower(): v for k, v in raw.getheaders()}
            try:
                decoded: Any = json.loads(data) if data else None
            except ValueError:
                decoded = data.decode("utf-8", "replace")
            reply = HttpReply(raw.status, reply_headers, decoded)
        except OSError as exc:
            reply = HttpReply(None, {}, None, error=f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
        if record:
            entry: dict[str, Any] = {"status": reply.status}
            if reply.error:
                entry["error"] = reply.error
            if reply.code:
                entry["envelope"] = reply.body
                if "retry-after" in reply.headers:
                    entry["retry_after"] = reply.headers["retry-after"]
            elif path in ("/health", "/ready"):
                entry["body"] = reply.body
            self._add("http", f"{method} http://{host}:{port}{path}", **entry)
        return reply

    def api(self, command: str, token: str | None, *, record: bool = True, server: Process | None = None,
            **body: Any) -> HttpReply:
        """POST /v1/mcp/<command> with a JSON body."""
        return self.http("POST", f"/v1/mcp/{command}", token=token, body=body, record=record, server=server)

    def ok(self, command: str, token: str, **body: Any) -> Any:
        """A command that must succeed; its output."""
        reply = self.api(command, token, **body)
        if reply.status != 200:
            raise DrillFailed(f"{command} -> {reply.status}: {reply.body or reply.error}")
        return reply.body

    def metrics(self, server: Process | None = None) -> str:
        reply = self.http("GET", "/metrics", server=server, record=False)
        if reply.status != 200:
            raise DrillFailed(f"GET /metrics -> {reply.status}: {reply.error}")
        return str(reply.body)

    def metric(self, name: str, server: Process | None = None, text: str | None = None,
               **labels: str) -> float | None:
        """Sum of the samples of `name` whose labels include `labels` (None when there is none); recorded."""
        text = self.metrics(server) if text is None else text
        total, seen = 0.0, False
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if not match or match.group(1) != name:
                continue
            have = dict(_LABEL.findall(match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
                seen = True
        value = total if seen else None
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        self._add("metric", f"{name}{{{label_text}}}" if labels else name, value=value)
        return value

    # ------------------------------------------------------------------------------------------- state
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A read-only query on the drill's database (for waiting on state; not an operator step)."""
        uri = f"file:{self.root / 'bridge.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql, tuple(params)).fetchall()]

    def job(self, trigger_id: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM trigger_jobs WHERE trigger_id = ?", (trigger_id,))
        if not rows:
            raise DrillFailed(f"no trigger job {trigger_id}")
        return rows[0]

    def jobs(self, thread_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM trigger_jobs WHERE thread_id = ? ORDER BY created_at", (thread_id,))

    def wait_for(self, predicate: Callable[[], T], what: str, timeout: float = 20.0, interval: float = 0.1) -> T:
        """Poll until `predicate()` is truthy (bounded); record how long it took; fail the drill on timeout."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            value = predicate()
            if value:
                self._add("wait", what, ok=True, waited_seconds=round(time.monotonic() - started, 3))
                return value
            if time.monotonic() >= deadline:
                self._add("wait", what, ok=False, waited_seconds=round(time.monotonic() - started, 3))
                raise DrillFailed(f"timed out after {timeout:g}s waiting for: {what}")
            time.sleep(interval)

    # ------------------------------------------------------------------------------------------- tokens, tmux
    def mint(self, agent_id: str, role: str = "participant", *, session_id: str | None = None,
             ttl: float = 3600, issuer: str = "bridge-local", workspace: str = "default") -> str:
        """A token signed with the drill database's local key (set-up, like `bridge token issue`)."""
        from bridge.auth.keys import load_or_create
        from bridge.auth.tokens import issue_token

        key = load_or_create(self.root / "bridge.data")
        token, claims = issue_token(key, issuer=issuer, audience="bridge", agent_id=agent_id, role=role,
                                    workspace_id=workspace, session_id=session_id or f"{agent_id}-s1", ttl=ttl)
        self._add("setup", f"token minted for {agent_id} ({role})", jti=claims["jti"],
                  session_id=claims["session_id"])
        return token

    def token_file(self, agent_id: str, token: str | None = None) -> str:
        """Write an agent's token to ./tokens/<agent>.token (where the stand-in templates look); return the path."""
        path = self.root / "tokens" / f"{agent_id}.token"
        path.write_text(token or self.mint(agent_id))
        return f"./tokens/{agent_id}.token"

    def standin_runtimes(self, *, resume_fails: bool = False, spawn: bool = True) -> str:
        """A runtimes file whose `generic` resume/spawn commands are the stand-in agent; returns its path.

        No `--url`: the stand-in reads `BRIDGE_URL`, which the worker sets to the server's address."""
        base = [sys.executable, "-m", "bridge.standin", "--token-file", str(self.root / "tokens" / "{agent_id}.token")]
        templates = {"generic": {
            "resume": [*base, "resume", *(["--fail"] if resume_fails else []), "{session_id}", "{prompt}"],
            "spawn": [*base, "agent", "--first-prompt", "{prompt}"] if spawn else None}}
        path = self.root / "runtimes.json"
        path.write_text(json.dumps(templates, indent=2))
        self._add("setup", "runtime adapters: generic = the stand-in agent", templates=templates)
        return "./runtimes.json"

    def standin_argv(self, agent_id: str, *extra: str) -> list[str]:
        """The command line of an interactive stand-in agent talking to the current server (absolute token path:
        a tmux pane does not start in the drill directory)."""
        assert self.server is not None and self.server.url is not None
        return [sys.executable, "-m", "bridge.standin", "--url", self.server.url, "--token-file",
                str(self.root / "tokens" / f"{agent_id}.token"), "agent", *extra]

    def launch_standin(self, agent_id: str, *extra: str) -> str:
        """`bridge runtime launch --db ./bridge.db --agent-id <agent> --kind generic -- <stand-in agent>`; waits for
        the stand-in's first heartbeat; returns its pane id."""
        if not (self.root / "tokens" / f"{agent_id}.token").exists():
            self.token_file(agent_id)
        launched = self.bridge("runtime", "launch", "--db", DB, "--agent-id", agent_id, "--kind", "generic",
                               "--json", "--", *self.standin_argv(agent_id, *extra)).json()
        pane = launched["tmux_target"]
        self.wait_pane(pane, f"STANDIN READY agent={agent_id}", 20)
        return pane

    def tmux(self, *args: str, check: bool = True) -> str:
        """Run tmux on the drill's private server (an observation or fault-injection tool, not recorded)."""
        done = subprocess.run(["tmux", "-L", self.tmux_socket, *args], capture_output=True, text=True, timeout=10,
                              check=False, cwd=self.root, env=self.env)
        if check and done.returncode != 0:
            raise DrillFailed(f"tmux {args[0]}: {done.stderr.strip()}")
        if self._tmux_pid is None and done.returncode == 0:
            self._remember_tmux_pid()
        return done.stdout

    def _remember_tmux_pid(self) -> None:
        done = subprocess.run(["tmux", "-L", self.tmux_socket, "display-message", "-p", "#{pid}"],
                              capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0 and done.stdout.strip().isdigit():
            self._tmux_pid = int(done.stdout.strip())

    def pane_text(self, target: str) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", target, "-S", "-300", check=False)

    def wait_pane(self, target: str, text: str, timeout: float = 20.0) -> str:
        return self.wait_for(lambda: text in self.pane_text(target) and self.pane_text(target),
                             f"pane {target} shows {text!r}", timeout)

    def attach_human(self, session: str, window: str) -> Human:
        """A tmux client attached in a pty to `session`, its keys going to `window`."""
        human = Human(self, session, window)
        self.humans.append(human)
        self._add("process", f"human tmux client attached to {session} (pid {human.pid})", pid=human.pid)
        return human

    # ------------------------------------------------------------------------------------------- lifecycle
    def close(self, error: BaseException | None) -> dict[str, Any]:
        """Stop everything (by PID), kill the private tmux server, write the evidence; return it."""
        cleanup = self.evidence["cleanup"]
        for human in reversed(self.humans):
            with _noting(cleanup, f"human client pid {human.pid}"):
                human.close()
                cleanup.append({"what": f"human client pid {human.pid}", "stopped": True})
        for proc in reversed(self.processes):
            with _noting(cleanup, f"{proc.name} pid {proc.pid}"):
                was_alive = proc.alive()
                code = proc.stop()
                code = proc.record.get("exit_code") if code is None else code
                cleanup.append({"what": f"{proc.name} pid {proc.pid}", "was_running": was_alive, "exit_code": code})
        if self._tmux_pid is None:
            self._remember_tmux_pid()
        with _noting(cleanup, "tmux server"):
            listed = subprocess.run(["tmux", "-L", self.tmux_socket, "list-panes", "-a", "-F", "#{pane_pid}"],
                                    capture_output=True, text=True, timeout=10, check=False).stdout
            pane_pids = [int(v) for v in listed.split() if v.isdigit()]
            subprocess.run(["tmux", "-L", self.tmux_socket, "kill-server"], capture_output=True, timeout=10,
                           check=False)
            pids = [p for p in [self._tmux_pid, *pane_pids] if p is not None]
            deadline = time.monotonic() + 5
            while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            survivors = [p for p in pids if _pid_alive(p)]
            for pid in survivors:  # the tmux server and the panes' processes, by PID
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            socket = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / self.tmux_socket
            if socket.is_socket():  # tmux may leave its socket file behind
                socket.unlink()
            cleanup.append({"what": f"tmux server -L {self.tmux_socket}", "pid": self._tmux_pid,
                            "pane_pids": pane_pids, "killed_after_timeout": survivors})
        passed = error is None
        self.evidence.update(finished_at=now_iso(), duration_seconds=round(time.monotonic() - self._started, 3),
                             **{"pass": passed})
        if error is not None:
            self.evidence["failure"] = {"message": str(error)[:4000], "type": type(error).__name__,
                                        "traceback": "".join(traceback.format_exception(error))[-6000:],
                                        "logs": {p.name: _clip(p.log_text()[-6000:], 6000) for p in self.processes}}
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / f"{self.drill.name}.json"
            path.write_text(json.dumps(self.evidence, indent=2, default=str) + "\n", encoding="utf-8")
            self.evidence["evidence_file"] = str(path)
        if self.keep or (error is not None and os.environ.get("BRIDGE_DRILL_KEEP_FAILED")):
            self.evidence["kept_workdir"] = str(self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return self.evidence


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().split(") ", 1)[1].split()[0] != "Z"
    return True


@contextlib.contextmanager
def _noting(cleanup: list[dict[str, Any]], what: str) -> Iterator[None]:
    """Cleanup goes on whatever one step raises; the problem is recorded."""
    try:
        yield
    except Exception as exc:
        cleanup.append({"what": what, "error": f"{type(exc).__name__}: {exc}"})


def run_drill(drill: Drill, out_dir: Path | str | None = None, *, keep: bool = False) -> dict[str, Any]:
    """Run one drill from start to cleanup; return its evidence (`pass` tells the outcome). Never raises for a
    failed drill; KeyboardInterrupt/SystemExit still clean up, write the evidence, and propagate."""
    ctx = DrillContext(drill, out_dir, keep=keep)
    error: BaseException | None = None
    try:
        drill.run(ctx)
    except (KeyboardInterrupt, SystemExit) as exc:
        ctx.close(exc)
        raise
    except Exception as exc:
        error = exc
    return ctx.close(error)
