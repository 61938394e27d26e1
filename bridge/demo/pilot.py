"""The pilot review loop, end to end on a real stack, with no human relay.

A coordinator (this process, over HTTP) opens a workflow thread and asks the reviewer to review. From there on every
hand-off is the bridge's automatic wake: the reviewer reports two findings, the executioner is woken and pushes a fix
for each, the reviewer is woken, verifies one and rejects the other, the executioner fixes again, the reviewer
verifies, and the coordinator resolves. The loop-guard scenario has a reviewer that keeps re-reporting the same
finding: the bridge blocks and escalates the thread, an operator assigns an owner (`bridge assign-escalation-owner`)
and the owner unblocks it.

The agents are either stand-ins (`python -m bridge.standin agent --persona-json …`: the scripted brain calling the
bridge directly) or the real Claude Code (reviewer) and Codex (executioner) CLIs, with their model replaced by the
fake Anthropic and OpenAI APIs playing the same brain (`bridge agent up`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridge.demo.brain import Finding, Persona
from bridge.standin import Client
from bridge.testing.service import ServiceStack as Stack
from bridge.testing.service import service_stack

__all__ = ["SCENARIOS", "PilotReport", "Stack", "run"]

FINDINGS = (Finding("F1", "Null check missing in parse()", "high", "src/parse.py", 88),
            Finding("F2", "Off-by-one in paginate()", "medium", "src/pages.py", 17))
REVIEWER = Persona(agent_id="reviewer", role="reviewer", peer="executioner", findings=FINDINGS,
                   reject_first=frozenset({"F2"}))
LOOPING_REVIEWER = Persona(agent_id="reviewer", role="reviewer", peer="executioner", findings=FINDINGS[:1],
                           repeat=True)
EXECUTIONER = Persona(agent_id="executioner", role="executioner")
PATHS = {"delivered": "typed", "resumed": "resume", "spawned": "spawn", "failed": "failed"}
Say = Callable[[str], None]


@dataclass(frozen=True)
class Wake:
    """One finished trigger: who was woken, by which path, how long after the message that caused it."""

    trigger_id: str
    agent_id: str
    path: str  # typed | resume | spawn | failed
    seconds: float | None
    code: str | None = None
    detail: str | None = None


@dataclass
class PilotReport:
    """What one scenario run did."""

    scenario: str
    thread_id: str = ""
    ok: bool = False
    seconds: float = 0.0
    status: str = ""
    open_items: int = -1
    wakes: list[Wake] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # event types in seq order
    problems: list[str] = field(default_factory=list)

    def wakes_by_path(self) -> dict[str, int]:
        return dict(Counter(w.path for w in self.wakes))

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "thread_id": self.thread_id, "ok": self.ok,
                "seconds": round(self.seconds, 2), "status": self.status, "open_items": self.open_items,
                "wakes_by_path": self.wakes_by_path(), "events": self.events, "problems": self.problems,
                "wakes": [w.__dict__ for w in self.wakes], "timeline": self.timeline}


class Timeline:
    """Watches the thread in the database and tells, as it happens, who posted and who was woken by which path."""

    def __init__(self, stack: Stack, thread_id: str, say: Say, started: float):
        self.stack, self.thread_id, self.say, self.started = stack, thread_id, say, started
        self.seq = 0
        self.finished: set[str] = set()
        self.report_wakes: list[Wake] = []
        self.lines: list[str] = []

    def poll(self) -> None:
        entries: list[tuple[int, str]] = []
        for seq, sender, kind, event_type, body, meta, at in self.stack.query(
                "SELECT seq, sender_agent_id, kind, event_type, body, metadata, created_at FROM messages"
                " WHERE thread_id = ? AND seq > ? ORDER BY seq", (self.thread_id, self.seq)):
            self.seq = seq
            finding = json.loads(meta).get("finding_id")
            label = f"{kind}/{event_type}" if event_type else kind
            entries.append((at, f"#{seq:<3} {sender:<12} {label:<26} {f'{finding} ' if finding else ''}"
                                f"{body.splitlines()[0][:60]}"))
        for trigger_id, agent, status, code, error, finished, caused in self.stack.query(
                "SELECT j.trigger_id, j.target_agent_id, j.status, j.result_code, j.last_error, j.finished_at,"
                " COALESCE(m.created_at, j.created_at) FROM trigger_jobs j LEFT JOIN messages m"
                " ON m.thread_id = j.thread_id AND m.seq = j.trigger_seq"
                " WHERE j.thread_id = ? AND j.finished_at IS NOT NULL ORDER BY j.finished_at", (self.thread_id,)):
            if trigger_id in self.finished:
                continue
            self.finished.add(trigger_id)
            wake = Wake(trigger_id, agent, PATHS[status], (finished - caused) / 1000, code, error)
            self.report_wakes.append(wake)
            how = f"failed ({code}: {error})" if status == "failed" else f"by {wake.path} in {wake.seconds:.1f}s"
            entries.append((finished, f"     woke {agent:<12} {how}  [{trigger_id}]"))
        for at, text in sorted(entries, key=lambda e: e[0]):
            line = f"{at / 1000 - self.started:7.1f}s  {text}"
            self.lines.append(line)
            self.say(line)


class Agents(Protocol):
    """How the reviewer and the executioner run: stand-ins, or the real CLIs against fake models."""

    def start(self, stack: Stack, personas: list[Persona], say: Say) -> None: ...

    def close(self) -> None:
        """Stop whatever `start` started that the stack does not stop itself."""


class StandinAgents:
    """Stand-ins in tmux panes, playing the personas through the scripted brain (no npm needed)."""

    def start(self, stack: Stack, personas: list[Persona], say: Say) -> None:
        for persona in personas:
            pane = stack.launch_standin(persona.agent_id, "--persona-json", json.dumps(persona.to_json()), timeout=30)
            say(f"stand-in {persona.agent_id} ({persona.role}) is up in pane {pane}")

    def close(self) -> None:
        """The stand-ins live in the stack's tmux server, which the stack stops."""


class RealAgents:
    """The real Claude Code (reviewer) and Codex (executioner), each against a fake model API playing its persona,
    put on the bridge with `bridge agent up`."""

    RUNTIME = {"reviewer": "claude", "executioner": "codex"}

    def __init__(self) -> None:
        self.models: list[Any] = []

    def start(self, stack: Stack, personas: list[Persona], say: Say) -> None:
        from bridge.demo.fake_anthropic import FakeAnthropic
        from bridge.demo.fake_openai import FakeOpenAI

        repo = stack.workdir / "repo"
        repo.mkdir(exist_ok=True)
        for persona in personas:
            kind = self.RUNTIME[persona.agent_id]
            fake_cls = FakeAnthropic if kind == "claude" else FakeOpenAI
            model = fake_cls(persona, log_path=stack.workdir / f"{persona.agent_id}-model.jsonl")
            model.start()
            self.models.append(model)
            home = stack.workdir / "homes" / persona.agent_id
            home.mkdir(parents=True, exist_ok=True)
            out = agent_up(stack, kind, persona.agent_id, cwd=repo, model_url=model.url, home=home)
            say(f"{kind} {persona.agent_id} ({persona.role}) is up in pane {out['tmux_target']}, "
                f"session {out['session_id']}")

    def close(self) -> None:
        for model in self.models:
            model.stop()


def agent_up(stack: Stack, kind: str, agent_id: str, *, cwd: Path, model_url: str, home: Path | None,
             timeout: float = 120.0) -> dict[str, Any]:
    """`bridge agent up` as an operator runs it, against the stack's database, tmux server and URL."""
    env = {"DEMO_MODEL_KEY": "sk-demo-not-a-real-key-0123456789abcdef"}
    args = ["agent", "up", "--runtime", kind, "--agent-id", agent_id, "--cwd", str(cwd), "--url", stack.url,
            "--model-url", model_url, "--api-key-env", "DEMO_MODEL_KEY", "--db", str(stack.db),
            "--tmux-socket", stack.tmux.socket_name or "", "--json", *(["--home", str(home)] if home else [])]
    done = stack.bridge(*args, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"bridge agent up {agent_id} failed ({done.returncode}): {done.stderr[-800:]}")
    return json.loads(done.stdout)


def _wait(condition: Callable[[], Any], timeout: float, timeline: Timeline, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        timeline.poll()
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    timeline.poll()
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def _events(coord: Client, thread_id: str) -> list[dict[str, Any]]:
    page = coord.call("read_messages", thread_id=thread_id, since_seq=0, limit=200, kinds=["event"])
    return page["messages"]


def _event_ids(messages: list[dict[str, Any]], event_type: str) -> list[str]:
    return [str(m["metadata"].get("finding_id")) for m in messages if m["metadata"].get("event_type") == event_type]


def review_loop(stack: Stack, say: Say, timeout: float) -> PilotReport:
    """The pilot scenario; the agents must already be up."""
    report = PilotReport("review_loop")
    coord = Client(stack.url, stack.token("coordinator", "coordinator"))
    started = time.time()
    thread = coord.call("create_thread", title="Review PR 42: parser and pagination", type="workflow",
                        participants=["reviewer", "executioner"])
    report.thread_id = thread_id = thread["thread_id"]
    timeline = Timeline(stack, thread_id, say, started)
    say(f"coordinator opened {thread_id} and asks the reviewer to review")
    coord.call("post_message", thread_id=thread_id, schema_version=1, kind="chat", to=["reviewer"],
               body="Please review PR 42 (src/parse.py, src/pages.py) and report findings as events.")

    def all_verified() -> bool:
        verified = set(_event_ids(_events(coord, thread_id), "finding_verified"))
        return verified >= {f.finding_id for f in REVIEWER.findings}

    try:
        _wait(all_verified, timeout, timeline, "the reviewer to verify every finding")
        coord.call("update_thread_status", thread_id=thread_id, status="resolved",
                   reason="all findings verified by the reviewer")
        _wait(lambda: stack.query("SELECT 1 FROM trigger_jobs WHERE thread_id = ? AND finished_at IS NULL",
                                  (thread_id,)) == [], 60, timeline, "the last wakes to finish")
    except TimeoutError as exc:
        report.problems.append(str(exc))
    summary = coord.call("summarize_thread", thread_id=thread_id)
    return _finish(report, coord, timeline, summary, started)


def loop_guard(stack: Stack, say: Say, timeout: float) -> PilotReport:
    """The pair repeats a finding: the bridge blocks and escalates; an operator assigns an owner who unblocks."""
    report = PilotReport("loop_guard")
    coord = Client(stack.url, stack.token("coordinator", "coordinator"))
    started = time.time()
    thread_id = coord.call("create_thread", title="Review PR 43: the finding that will not go away",
                           type="workflow", participants=["reviewer", "executioner"])["thread_id"]
    report.thread_id = thread_id
    timeline = Timeline(stack, thread_id, say, started)
    say(f"coordinator opened {thread_id}; this reviewer re-reports its finding after every fix")
    coord.call("post_message", thread_id=thread_id, schema_version=1, kind="chat", to=["reviewer"],
               body="Please review PR 43.")

    def status() -> str:
        return coord.call("get_thread", thread_id=thread_id)["status"]

    try:
        _wait(lambda: status() == "blocked", timeout, timeline, "the loop guard to block the thread")
        escalation = coord.call("get_thread", thread_id=thread_id).get("escalation") or {}
        say(f"thread blocked by the loop guard: {escalation.get('reason', '?')}")
        assign = stack.bridge("assign-escalation-owner", "--thread-id", thread_id, "--owner-agent-id",
                               "coordinator", "--reason", "coordinator owns the repeated finding", "--db",
                               str(stack.db))
        if assign.returncode != 0:
            raise RuntimeError(f"assign-escalation-owner failed: {assign.stderr}")
        say("operator assigned the escalation to coordinator (bridge assign-escalation-owner)")
        coord.call("update_thread_status", thread_id=thread_id, status="active",
                   reason="owner reviewed the repeated finding; reviewer to re-check by hand")
        say("owner coordinator unblocked the thread")
        _wait(lambda: status() == "active", 30, timeline, "the thread to be active again")
    except (TimeoutError, RuntimeError) as exc:
        report.problems.append(str(exc))
    summary = coord.call("summarize_thread", thread_id=thread_id)
    return _finish(report, coord, timeline, summary, started)


def _finish(report: PilotReport, coord: Client, timeline: Timeline, summary: dict[str, Any],
            started: float) -> PilotReport:
    timeline.poll()
    report.seconds = time.time() - started
    report.status = summary.get("last_status", "?")
    report.open_items = summary.get("counts", {}).get("open_items", -1)
    report.wakes, report.timeline = timeline.report_wakes, timeline.lines
    report.events = [m["metadata"]["event_type"] for m in _events(coord, report.thread_id)]
    expected = {"review_loop": ("resolved", 0), "loop_guard": ("active", None)}[report.scenario]
    if report.status != expected[0]:
        report.problems.append(f"thread ended {report.status}, expected {expected[0]}")
    if expected[1] is not None and report.open_items != expected[1]:
        report.problems.append(f"{report.open_items} open items left")
    failed = [w for w in report.wakes if w.path == "failed" and w.code != "THREAD_AUTO_BLOCKED"]
    if failed:  # the bridge refusing to wake agents into a loop it blocked is the loop guard working
        report.problems.append("a wake failed: " + "; ".join(f"{w.agent_id}: {w.code} {w.detail}" for w in failed))
    report.ok = not report.problems
    return report


SCENARIOS = {"review_loop": (review_loop, [REVIEWER, EXECUTIONER]),
             "loop_guard": (loop_guard, [LOOPING_REVIEWER, EXECUTIONER])}

# Worker timings for the demo: the defaults, but a shorter poll so hand-offs do not wait for the 5 s reconcile.
DEMO_ENV = {"BRIDGE_WORKER_POLL": "1s", "BRIDGE_LOG_LEVEL": "WARNING"}


@contextlib.contextmanager
def pilot_stack(workdir: Path | None, agents: Agents, personas: list[Persona], say: Say,
                env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A real stack with the two agents up; everything stopped on exit."""
    with service_stack(workdir, env={**DEMO_ENV, **(env or {})}) as stack:
        say(f"bridge serving {stack.url}, database {stack.db}, tmux socket {stack.tmux.socket_name}")
        try:
            agents.start(stack, personas, say)
            yield stack
        finally:
            agents.close()


def run(scenario: str, *, real: bool, workdir: Path | None = None, say: Say = print, timeout: float = 300.0,
        env: dict[str, str] | None = None, on_ready: Callable[[Stack], None] | None = None,
        after: Callable[[Stack], None] | None = None) -> PilotReport:
    """Run one scenario on a fresh stack and return its report (`after` runs before the stack stops)."""
    play, personas = SCENARIOS[scenario]
    agents: Agents = RealAgents() if real else StandinAgents()
    loop_env = {"BRIDGE_LOOP_GUARD_REPEATS": "3"} if scenario == "loop_guard" else {}
    with pilot_stack(workdir, agents, personas, say, {**loop_env, **(env or {})}) as stack:
        if on_ready is not None:
            on_ready(stack)
        report = play(stack, say, timeout)
        if after is not None:
            after(stack)
        return report
