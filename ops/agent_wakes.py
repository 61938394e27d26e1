"""Wake latency of the real agent CLIs by path: typed into the TUI, headless resume of its own session, spawn.

    bridge ops agent-wakes --runtime claude|codex --path typed|resume|spawn [--wakes 20] [--json]

On a real stack (`bridge serve` child process, private tmux server, database file), one real agent is put on the
bridge with `bridge agent up`, its model a local fake API playing the `echo` persona. Each wake opens a fresh thread
(the trigger storm guard allows 10 wakes per thread and agent a minute), a peer posts to the agent, and the wake is
timed from the message's commit (`created_at`) to the agent's first tool call for that thread (the fake model's log:
the moment the CLI got its `read_messages` call) and to the end of the job. Before each `resume` wake the agent's
pane is gone; before each `spawn` wake its session is also not resumable. A wake counts only if the agent replied
and acknowledged. Everything started is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bridge.demo import pilot
from bridge.demo.brain import Persona
from bridge.standin import Client
from bridge.testing.processes import wait_until
from bridge.testing.service import ServiceStack, service_stack
from bridge.testing.stats import summary

AGENT = "agent"
PATHS = {"typed": "delivered", "resume": "resumed", "spawn": "spawned"}
# Default timings but a fast reconcile and a short quiet window (nobody types here).
ENV = {"BRIDGE_WORKER_POLL": "500ms", "BRIDGE_QUIET_WINDOW": "3s", "BRIDGE_DEFER_RECHECK": "500ms",
       "BRIDGE_SPAWN_ACK_TIMEOUT": "90s", "BRIDGE_LOG_LEVEL": "WARNING"}


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `condition()` is truthy; return it, or raise TimeoutError naming `what`."""
    value = wait_until(condition, timeout, 0.1)
    if not value:
        raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
    return value


@dataclass
class RealAgent:
    """One real agent CLI on a live stack, a peer that talks to it, and a coordinator that watches."""

    stack: ServiceStack
    kind: str
    up: dict[str, Any]
    peer: Client
    coord: Client

    def thread(self, title: str = "real agent") -> str:
        return self.coord.call("create_thread", title=title, type="workflow",
                               participants=[AGENT, "peer"])["thread_id"]

    def post(self, thread_id: str, body: str) -> int:
        return self.peer.call("post_message", thread_id=thread_id, schema_version=1, kind="chat", body=body,
                              to=[AGENT])["seq"]

    def job(self, thread_id: str, seq: int, timeout: float = 120) -> dict[str, Any]:
        """The automatic wake for message `seq`, once finished."""
        columns = ["trigger_id", "status", "result_code", "last_error", "tmux_target", "finished_at"]
        rows = wait_for(lambda: self.stack.query(
            f"SELECT {', '.join(columns)} FROM trigger_jobs WHERE thread_id = ? AND trigger_seq = ?"
            " AND finished_at IS NOT NULL", (thread_id, seq)), timeout, f"the wake for seq {seq} to finish")
        return dict(zip(columns, rows[0], strict=True))

    def attempts(self, trigger_id: str) -> list[tuple[str, str, str | None]]:
        return self.stack.query("SELECT stage, outcome, reason_code FROM trigger_attempts WHERE trigger_id = ?"
                                " ORDER BY attempt_id", (trigger_id,))

    def replies(self, thread_id: str) -> list[dict[str, Any]]:
        page = self.coord.call("read_messages", thread_id=thread_id, since_seq=0, limit=200, from_agent_id=AGENT)
        return page["messages"]

    def replied(self, thread_id: str, seq: int) -> bool:
        """The agent's own effect: it acknowledged the message and answered it on the thread."""
        return self.cursor(thread_id) >= seq and any(m["body"] == f"echo seq {seq}" for m in self.replies(thread_id))

    def cursor(self, thread_id: str) -> int:
        rows = self.stack.query("SELECT last_read_seq FROM read_cursors WHERE thread_id = ? AND agent_id = ?",
                                (thread_id, AGENT))
        return rows[0][0] if rows else 0

    def created_at(self, thread_id: str, seq: int) -> int:
        return self.stack.query("SELECT created_at FROM messages WHERE thread_id = ? AND seq = ?",
                                (thread_id, seq))[0][0]

    def session(self) -> dict[str, Any]:
        columns = ["session_id", "resumable", "status", "tmux_target", "profile"]
        row = self.stack.query(f"SELECT {', '.join(columns)} FROM sessions WHERE agent_id = ?", (AGENT,))[0]
        return dict(zip(columns, row, strict=True))

    def tool_calls(self) -> list[dict[str, Any]]:
        path = self.stack.workdir / "model.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def first_call(self, thread_id: str) -> float | None:
        """When the model first called a tool on this thread (unix time), from the fake model's log."""
        times = [c["t"] for c in self.tool_calls() if c["arguments"].get("thread_id") == thread_id]
        return min(times) if times else None

    def kill_pane(self) -> None:
        """The agent's terminal goes away; the worker's reconcile marks the runtime offline."""
        target = self.session()["tmux_target"]
        with contextlib.suppress(Exception):
            self.stack.tmux.kill_pane(target)
        wait_for(lambda: self.session()["status"] == "offline", 15, "the runtime to be marked offline")


@contextlib.contextmanager
def real_agent(kind: str, workdir: Path, env: dict[str, str] | None = None,
               db: str = "bridge.db") -> Iterator[RealAgent]:
    """A real stack on `db` (a SQLite file in `workdir`, or a PostgreSQL URL) with one real `kind` agent (fake model,
    `echo` persona) put on it with `bridge agent up`."""
    from bridge.demo.fake_anthropic import FakeAnthropic
    from bridge.demo.fake_openai import FakeOpenAI

    with service_stack(workdir, env={**ENV, **(env or {})}, db=db) as stack:
        persona = Persona(agent_id=AGENT, role="echo")
        fake = FakeAnthropic if kind == "claude" else FakeOpenAI
        with fake(persona, log_path=stack.workdir / "model.jsonl") as model:
            repo = stack.workdir / "repo"
            repo.mkdir(exist_ok=True)
            up = pilot.agent_up(stack, kind, AGENT, cwd=repo, model_url=model.url, home=stack.workdir / "home")
            yield RealAgent(stack, kind, up, Client(stack.url, stack.token("peer")),
                            Client(stack.url, stack.token("coord", "coordinator")))


def _prepare(agent: RealAgent, path: str) -> None:
    """Put the agent in the state that makes the next wake take `path`."""
    if path == "typed":
        return
    if agent.session()["status"] != "offline":
        agent.kill_pane()
    if path == "spawn":  # nothing to resume: the bridge must start a fresh session
        agent.stack.query("UPDATE sessions SET resumable = 0 WHERE agent_id = ?", (AGENT,))


def _one_wake(agent: RealAgent, path: str, i: int) -> dict[str, Any]:
    _prepare(agent, path)
    thread_id = agent.thread(f"{path} wake {i}")
    seq = agent.post(thread_id, f"wake {i}")
    committed = agent.created_at(thread_id, seq) / 1000
    job = agent.job(thread_id, seq)
    try:
        ok = job["status"] == PATHS[path] and wait_for(lambda: agent.replied(thread_id, seq), 30, "the reply")
    except TimeoutError:
        ok = False
    called = agent.first_call(thread_id)
    return {"wake": i, "status": job["status"], "ok": bool(ok),
            "to_tool_call_ms": None if called is None else round((called - committed) * 1000, 1),
            "to_done_ms": round(job["finished_at"] - committed * 1000, 1)}


def measure(kind: str, path: str, wakes: int = 20, workdir: Path | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time `wakes` wakes of one real agent by one path; return percentiles and per-wake rows."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bridge-agent-wakes-") as scratch, \
            real_agent(kind, (workdir or Path(scratch)) / f"{kind}-{path}") as agent:
        warm = agent.thread("warm-up")  # a first typed wake: Codex names its session at its first prompt
        seq = agent.post(warm, "warm-up")
        agent.job(warm, seq)
        wait_for(lambda: agent.session()["resumable"] == 1, 30, "a resumable session")
        for i in range(wakes):
            rows.append(_one_wake(agent, path, i))
            if progress:
                progress(f"{kind} {path} {i + 1}/{wakes}: {rows[-1]}")
    good = [r for r in rows if r["ok"] and r["to_tool_call_ms"] is not None]
    return {"runtime": kind, "path": path, "wakes": wakes, "ok": len(good),
            "post_to_tool_call_ms": summary(r["to_tool_call_ms"] for r in good) or None,
            "post_to_done_ms": summary(r["to_done_ms"] for r in good) or None, "rows": rows}


@click.command("agent-wakes")
@click.option("--runtime", "kinds", type=click.Choice(["claude", "codex"]), multiple=True,
              help="Which CLI (repeatable; default both).")
@click.option("--path", "paths", type=click.Choice(list(PATHS)), multiple=True,
              help="Which wake path (repeatable; default all three).")
@click.option("--wakes", type=click.IntRange(1, 500), default=20, show_default=True, help="Wakes per runtime and path.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def agent_wakes(kinds: tuple[str, ...], paths: tuple[str, ...], wakes: int, as_json: bool) -> None:
    """Post-to-tool-call latency of the real Claude Code and Codex CLIs, by wake path (fake models)."""
    reports = [measure(kind, path, wakes, progress=None if as_json else click.echo)
               for kind in kinds or ("claude", "codex") for path in paths or tuple(PATHS)]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        click.echo(f"{'runtime':<8} {'path':<7} {'ok':>6}  post→tool call p50 / p95      post→done p50 / p95")
        for r in reports:
            call, done = r["post_to_tool_call_ms"] or {}, r["post_to_done_ms"] or {}
            click.echo(f"{r['runtime']:<8} {r['path']:<7} {r['ok']:>3}/{r['wakes']:<3} "
                       f"{call.get('p50', float('nan')):>9.0f} / {call.get('p95', float('nan')):<9.0f} ms "
                       f"{done.get('p50', float('nan')):>9.0f} / {done.get('p95', float('nan')):<9.0f} ms")
    raise SystemExit(0 if all(r["ok"] == r["wakes"] for r in reports) else 1)
