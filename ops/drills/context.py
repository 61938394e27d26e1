"""`DrillContext`: the harness's `Stack` in a drill's temporary directory, with every step written as evidence.

The directory is every command's working directory and the database is `./bridge.db` in it, so runbook commands
such as `bridge freeze --db ./bridge.db` run verbatim; the stack has its private tmux server
(`BRIDGE_TMUX_SOCKET=bridge-drill-<hex>`) and the fast wake timings, so a drill takes seconds. On top of the stack a
drill records: `step`, `fault`, `observe` and `check` (a false check ends the drill), the commands it runs (`run`,
`bridge`) with their exit codes and redacted output, its HTTP exchanges (`http`, `api`, `ok`), metrics it read,
waits (`wait_for`), tokens it minted and every process it started. The set-up most drills share is here too
(`set_up`, `set_up_with_standin`), as are the reads their verifications share.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from bridge_ops.drills.evidence import CommandResult, DrillFailed, Evidence, clip, display, now_iso

import bridge
from bridge.testing.client import Client, Reply, metric, new_thread, post, read_thread
from bridge.testing.human import Human
from bridge.testing.processes import Proc, bridge_argv, wait_until
from bridge.testing.stack import Stack
from bridge.worker.tmux import Tmux, TmuxError

T = TypeVar("T")
DB = "./bridge.db"  # relative to the drill's directory, exactly as the runbooks write it
PARTICIPANTS = ["reviewer", "executioner"]  # who works on a drill's thread; the coordinator creates it


class Scene(NamedTuple):
    """What a standard set-up leaves: the server, the coordinator's and one participant's tokens, the thread."""

    server: Proc
    coordinator: str
    participant: str
    thread_id: str


class RecordedClient(Client):
    """A client whose every exchange goes into the drill's timeline."""

    def __init__(self, target: str, token: str | None, timeout: float, evidence: Evidence):
        super().__init__(target, token, timeout)
        self.evidence = evidence

    def exchange(self, method: str, path: str, payload: Any = None, **options: Any) -> Reply:
        reply = super().exchange(method, path, payload, **options)
        self.evidence.http(method, self.url, path, reply)
        return reply


class DrillContext(Stack):
    """Everything one drill run owns: the stack in a temporary directory, and the evidence (`evidence.record`)."""

    def __init__(self, name: str, about: dict[str, str]):
        super().__init__(tempfile.mkdtemp(prefix=f"bridge-drill-{name}-"), db=DB, tmux_prefix="bridge-drill")
        repo = str(Path(__file__).resolve().parents[2])  # children import this checkout's code, installed or not
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, self.env.get("PYTHONPATH")) if p)
        self.evidence = Evidence(about, {
            "python": sys.version.split()[0], "platform": platform.platform(), "bridge_version": bridge.__version__,
            "workdir": str(self.workdir), "tmux_socket": self.tmux_socket, "settings": dict(self.settings_env)})
        self.children: list[tuple[dict[str, Any], Callable[[], int | None]]] = []  # record, exit code reader
        self.logs: list[Proc] = []

    # ------------------------------------------------------------------------------------------- evidence
    def step(self, title: str) -> None:
        """A runbook step begins (Detect, Diagnose, Recover, Verify ...)."""
        self.evidence.add("step", title)

    def fault(self, what: str, **data: Any) -> None:
        """Record the fault being injected (call it right before injecting)."""
        self.evidence.add("fault", what, **data)

    def observe(self, what: str, **data: Any) -> None:
        """Record something seen (a metric value, a log event, a state)."""
        self.evidence.add("observation", what, **data)

    def check(self, ok: Any, what: str, **data: Any) -> None:
        """Record a verification; a false one fails the drill at once."""
        self.evidence.add("check", what, ok=bool(ok), **data)
        if not ok:
            raise DrillFailed(f"check failed: {what} {json.dumps(data, default=str)[:1500]}")

    def wait_for(self, predicate: Callable[[], T], what: str, timeout: float = 20.0, interval: float = 0.1) -> T:
        """Poll until `predicate()` is truthy (bounded); record how long it took; fail the drill on timeout."""
        started = time.monotonic()
        value = wait_until(predicate, timeout, interval)
        self.evidence.add("wait", what, ok=bool(value), waited_seconds=round(time.monotonic() - started, 3))
        if not value:
            raise DrillFailed(f"timed out after {timeout:g}s waiting for: {what}")
        return value

    # ------------------------------------------------------------------------------------------- commands
    def run(self, argv: Sequence[str], *, expect: int | None = 0, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run a command to completion (bounded) in the drill directory; record it; check its exit code."""
        argv = list(argv)
        started, at = time.monotonic(), now_iso()
        try:
            done = subprocess.run(argv, cwd=self.workdir, env={**self.env, **(env or {})}, capture_output=True,
                                  text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = -1, _text(exc.stdout), _text(exc.stderr) + f"\n[timed out after {timeout:g}s]"
        result = CommandResult(display(argv), code, out, err, round(time.monotonic() - started, 3))
        self.evidence.command(result, at, started, env)
        if expect is not None and code != expect:
            raise DrillFailed(f"`{result.display}` exited {code}, expected {expect}:\n{clip(err or out, 1500)}")
        return result

    def bridge(self, *args: str, expect: int | None = 0, timeout: float = 60.0,
               env: dict[str, str] | None = None) -> CommandResult:
        """`bridge <args>` (as `python -m bridge`, this interpreter) in the drill directory, recorded."""
        return self.run(bridge_argv(*args), expect=expect, timeout=timeout, env=env)

    def kill(self, proc: Proc, what: str) -> int | None:
        """The runbook's `kill <pid>` (SIGTERM), a bounded wait for `what` (the process exiting); its exit code."""
        self.run(["kill", str(proc.pid)])
        self.wait_for(lambda: not proc.alive(), what, 15)
        return self.stop(proc)

    # ------------------------------------------------------------------------------------------- processes
    def started(self, proc: Proc) -> None:
        """Every child is recorded (its exit is filled in when it is stopped) and its log kept for a failure."""
        record = self.evidence.process({"name": proc.name, "pid": proc.pid, "command": display(proc.argv),
                                        "log": str(proc.log_path)}, f"started {proc.name} (pid {proc.pid})",
                                       command=display(proc.argv), pid=proc.pid)
        self.children.append((record, lambda: proc.exit_code))
        self.logs.append(proc)

    def serve(self, name: str = "server", *args: str, worker: bool = True, **options: Any) -> Proc:
        """`bridge serve --db ./bridge.db --port 0` (with its worker unless told otherwise), ready; recorded."""
        proc = super().serve(name, *args, worker=worker, **options)
        self.evidence.add("process", f"{name} ready at {proc.url}", pid=proc.pid)
        return proc

    def worker(self, name: str = "worker", *args: str, **options: Any) -> Proc:
        """`bridge worker --db ./bridge.db --port <the server's port>`, ready; recorded."""
        proc = super().worker(name, *args, **options)
        self.evidence.add("process", f"{name} ready", pid=proc.pid)
        return proc

    def stop(self, proc: Proc) -> int | None:
        """Stop a child now (SIGTERM, then SIGKILL); its exit is recorded; the exit code."""
        code = proc.stop()
        self._note_exits()
        return code

    def _note_exits(self) -> None:
        """Fill in the exit of every recorded child that has ended."""
        for record, exit_code in self.children:
            if "stopped_at" not in record and exit_code() is not None:
                record.update(stopped_at=now_iso(), exit_code=exit_code())

    # ------------------------------------------------------------------------------------------- HTTP
    def http(self, method: str, path: str, *, token: str | None = None, body: Any = None,
             server: Proc | None = None, timeout: float = 30.0, record: bool = True) -> Reply:
        """One request to a server (the current one by default), on a fresh connection; recorded unless told
        otherwise; a refused connection is a reply with no status."""
        client = (self.recorded_client(token, server, timeout) if record
                  else self.client(token, server=server, timeout=timeout))
        with client:
            return client.exchange(method, path, body)

    def api(self, command: str, token: str | None, *, record: bool = True, server: Proc | None = None,
            **body: Any) -> Reply:
        """POST /v1/mcp/<command> with a JSON body."""
        return self.http("POST", f"/v1/mcp/{command}", token=token, body=body, record=record, server=server)

    def ok(self, command: str, token: str, **body: Any) -> Any:
        """A command that must succeed; its output."""
        with self.recorded_client(token) as client:
            return client.ok(command, body)

    def recorded_client(self, token: str | None = None, server: Proc | None = None,
                        timeout: float = 30.0) -> RecordedClient:
        """A client of a server (the current one by default) whose exchanges are recorded; the caller closes it."""
        target = server or self.server
        if target is None or target.url is None:
            raise DrillFailed("no server to talk to")
        return RecordedClient(target.url, token, timeout, self.evidence)

    def metrics(self, server: Proc | None = None) -> str:
        """GET /metrics (not recorded: the values read from it are)."""
        reply = self.http("GET", "/metrics", server=server, record=False)
        if reply.status != 200:
            raise DrillFailed(f"GET /metrics -> {reply.status}: {reply.error}")
        return str(reply.body)

    def metric(self, name: str, server: Proc | None = None, text: str | None = None, **labels: str) -> float | None:
        """Sum of the samples of `name` whose labels include `labels` (None when there is none); recorded."""
        value = metric(self.metrics(server) if text is None else text, name, **labels)
        self.evidence.add("metric", _series(name, labels), value=value)
        return value

    def check_metric(self, name: str, expected: float, text: str | None = None, **labels: str) -> None:
        """Check that a metric (summed as `metric` does) equals `expected`."""
        value = self.metric(name, text=text, **labels)
        self.check(value == expected, f"{_series(name, labels)} = {expected}", value=value)

    # ------------------------------------------------------------------------------------------- set-up
    def token(self, agent_id: str, role: str = "participant", **options: Any) -> str:
        """A token signed with the drill database's local key (set-up, like `bridge token issue`); recorded
        without the token."""
        token, claims = self.minter.issue(agent_id, role, **options)
        self.evidence.add("setup", f"token minted for {agent_id} ({role})", jti=claims["jti"],
                          session_id=claims["session_id"])
        return token

    def new_thread(self, token: str, title: str) -> str:
        """A workflow thread with the reviewer and the executioner, created with `token`; its id."""
        with self.recorded_client(token) as client:
            return new_thread(client, PARTICIPANTS, title)

    def post(self, token: str, thread_id: str, body: str, **extra: Any) -> dict[str, Any]:
        """A chat message that must be accepted; post_message's result."""
        with self.recorded_client(token) as client:
            return post(client, thread_id, body, **extra)

    def set_up(self, scene: str, title: str, name: str = "server", env: Mapping[str, str] | None = None) -> Scene:
        """The standard set-up, recorded as the step "Set-up: <scene>": `bridge serve`, the coordinator's and the
        reviewer's tokens, and a thread called `title`."""
        self.step(f"Set-up: {scene}")
        server = self.serve(name, env=env)
        coordinator, reviewer = self.token("coordinator", "coordinator"), self.token("reviewer")
        return Scene(server, coordinator, reviewer, self.new_thread(coordinator, title))

    def set_up_with_standin(self, scene: str, title: str, env: Mapping[str, str] | None = None, *,
                            resume_fails: bool = False, spawn: bool = True) -> Scene:
        """The set-up with an agent, recorded as the step "Set-up: <scene>": `bridge serve` whose generic runtime is
        the stand-in agent, the coordinator's and the executioner's tokens, a stand-in reviewer launched in a
        managed pane (`panes["reviewer"]`), then a thread called `title`."""
        self.step(f"Set-up: {scene}")
        runtimes = {"BRIDGE_RUNTIMES_FILE": str(self.standin_runtimes(resume_fails=resume_fails, spawn=spawn))}
        server = self.serve(env={**runtimes, **(env or {})})
        coordinator, executioner = self.token("coordinator", "coordinator"), self.token("executioner")
        self.launch_standin("reviewer")
        return Scene(server, coordinator, executioner, self.new_thread(coordinator, title))

    def standin_runtimes(self, *, resume_fails: bool = False, spawn: bool = True) -> Path:
        """The stack's runtimes file (the stand-in as the `generic` runtime), its templates recorded."""
        path = super().standin_runtimes(resume_fails=resume_fails, spawn=spawn)
        self.evidence.add("setup", "runtime adapters: generic = the stand-in agent",
                          templates=json.loads(path.read_text()))
        return path

    def launch_standin(self, agent_id: str, *extra: str, timeout: float = 20.0) -> str:
        """`bridge runtime launch --db ./bridge.db --agent-id <agent> --kind generic -- <stand-in agent>`; waits for
        the stand-in to start; its pane id."""
        if not (self.workdir / "tokens" / f"{agent_id}.token").exists():
            self.token_file(agent_id)
        launched = self.bridge("runtime", "launch", "--db", DB, "--agent-id", agent_id, "--kind", "generic",
                               "--json", "--", *self.standin_argv(agent_id, *extra)).json()
        pane: str = launched["tmux_target"]
        self.panes[agent_id] = pane
        self.wait_pane(pane, f"STANDIN READY agent={agent_id}", timeout)
        return pane

    def attach_human(self, session: str, window: str) -> Human:
        """A person at the keyboard of `session` (see the stack); recorded as a process."""
        human = super().attach_human(session, window)
        record = self.evidence.process({"name": "human-tmux-client", "pid": human.pid, "command": display(human.argv)},
                                       f"human tmux client attached to {session} (pid {human.pid})", pid=human.pid)
        self.children.append((record, lambda: human.proc.returncode))
        return human

    # ------------------------------------------------------------------------------------------- reads
    def read_back(self, token: str, thread_id: str) -> list[dict[str, Any]]:
        """Every message of the thread, read page by page through the API."""
        with self.recorded_client(token) as client:
            return read_thread(client, thread_id)

    def job(self, trigger_id: str) -> dict[str, Any]:
        """The trigger job's row."""
        rows = self.rows("SELECT * FROM trigger_jobs WHERE trigger_id = ?", (trigger_id,))
        if not rows:
            raise DrillFailed(f"no trigger job {trigger_id}")
        return rows[0]

    def jobs(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's trigger jobs' rows, oldest first."""
        return self.rows("SELECT * FROM trigger_jobs WHERE thread_id = ? ORDER BY created_at", (thread_id,))

    def participant(self, thread_id: str, agent_id: str) -> dict[str, Any]:
        """An agent's read state in `bridge inspect-thread`."""
        inspected = self.bridge("inspect-thread", "--db", DB, "--thread-id", thread_id, "--json").json()
        return next(p for p in inspected["thread"]["participants"] if p["agent_id"] == agent_id)

    def runtime(self, agent_id: str) -> dict[str, Any]:
        """An agent's entry in `bridge runtime list`."""
        registry = self.bridge("runtime", "list", "--db", DB, "--json").json()["runtimes"]
        return next(r for r in registry if r["agent_id"] == agent_id)

    def pane_text(self, target: str) -> str:
        """A pane's text ("" when it is gone)."""
        with contextlib.suppress(TmuxError):
            return self.tmux.capture(target, 300)
        return ""

    def wait_pane(self, target: str, text: str, timeout: float = 20.0) -> str:
        """Wait (recorded) until a pane shows `text`; its text."""
        return self.wait_for(lambda: text in (shown := self.pane_text(target)) and shown,
                             f"pane {target} shows {text!r}", timeout)

    def wait_delivered(self, trigger_id: str, pane: str, what: str) -> None:
        """Wait for a trigger to be delivered and for the stand-in in `pane` to acknowledge it."""
        self.wait_for(lambda: self.job(trigger_id)["status"] == "delivered", what, 20)
        self.wait_pane(pane, f"STANDIN ACKED trigger={trigger_id}", 10)

    # ------------------------------------------------------------------------------------------- the end
    def finish(self, error: BaseException | None, out_dir: Path | None, keep: bool) -> dict[str, Any]:
        """Stop everything (by PID, the private tmux server with every pane process), write the evidence record
        (to <out_dir>/<drill>.json when given); remove the directory unless kept; return the record."""
        if Tmux.available():
            self.tmux  # noqa: B018 - a tmux server started by a child (runtime launch) is stopped too
        self.evidence.record["cleanup"] += self.close()
        self._note_exits()
        self.evidence.finish(error, {proc.name: proc.log_text() for proc in self.logs})
        if out_dir is not None:
            self.evidence.write(out_dir, self.evidence.record["drill"])
        if keep or (error is not None and os.environ.get("BRIDGE_DRILL_KEEP_FAILED")):
            self.evidence.record["kept_workdir"] = str(self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.evidence.record


def _series(name: str, labels: Mapping[str, str]) -> str:
    """`name{k="v",...}` as the evidence writes a metric."""
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
