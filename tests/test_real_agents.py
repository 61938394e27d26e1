"""The real Claude Code and Codex CLIs on the bridge, woken by it with no human relay.

Each CLI is the pinned npm release (`./scripts/test` installs it), put on the bridge with `bridge agent up` against
a live `bridge serve` process and a private tmux server; its model is a local fake API (`bridge.demo.fake_*`) that
plays a scripted persona, so what the CLI does (call the bridge's MCP tools, keep its session, resume it) is real.
Success is always the agent's own effect: its reply on the thread and its read cursor, never an exit code.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_ops.agent_wakes import AGENT, RealAgent, real_agent, wait_for

from bridge.demo import pilot
from bridge.standin import Client

RUNTIMES = ["claude", "codex"]


@pytest.fixture(params=RUNTIMES)
def rig(request: pytest.FixtureRequest, tmp_path: Path, db: str) -> Iterator[RealAgent]:
    """The real CLI on a bridge whose store is the test's `db` (SQLite or PostgreSQL)."""
    with real_agent(request.param, tmp_path / "stack", db=db) as agent:
        yield agent


def assert_replied(rig: RealAgent, thread_id: str, seq: int) -> None:
    """The agent's own effect: it read the message (cursor), and answered it on the thread."""
    assert rig.cursor(thread_id) >= seq
    assert any(m["body"] == f"echo seq {seq}" for m in rig.replies(thread_id)), rig.replies(thread_id)


def test_agent_up_registers_a_managed_tui_with_its_own_profile(rig: RealAgent):
    session = rig.session()
    assert session["status"] == "idle" and session["tmux_target"] == rig.up["tmux_target"]
    profile = json.loads(session["profile"])
    assert profile["env"] and "BRIDGE_TOKEN" not in json.dumps(profile)  # the token lives in a 0600 file only
    folder = Path(rig.up["agent_dir"])
    assert folder.stat().st_mode & 0o077 == 0
    if rig.kind == "claude":  # the bridge chose the session id at launch
        assert uuid.UUID(session["session_id"]) and session["resumable"] == 1
    else:  # Codex names its own session when its first prompt is submitted: nothing to resume yet
        assert session["resumable"] == 0
    assert rig.up["attach"].startswith(f"tmux -L {rig.stack.tmux.socket_name} attach -t ")


def test_agent_up_twice_is_refused_and_agent_down_stops_it_and_revokes_its_token(rig: RealAgent):
    stack = rig.stack
    where = ["--db", str(stack.db), "--tmux-socket", stack.tmux.socket_name or "", "--json"]
    again = stack.bridge("agent", "up", "--runtime", rig.kind, "--agent-id", AGENT, "--url", stack.url, *where)
    assert again.returncode == 1 and json.loads(again.stderr)["error"]["code"] == "CONFLICT", again.stderr
    configs = " ".join(p.read_text() for p in Path(rig.up["agent_dir"]).rglob("*") if p.is_file()
                       and p.suffix in (".json", ".toml"))
    token = re.search(r"Bearer ([\w.-]+)", configs).group(1)
    assert "error" not in Client(stack.url, token).call("inbox")

    down = stack.bridge("agent", "down", "--agent-id", AGENT, "--reason", "test over", *where)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["killed_pane"] is True
    assert rig.session()["status"] == "offline" and stack.tmux.probe(rig.up["tmux_target"]) is None
    assert Client(stack.url, token).call("inbox")["error"]["code"] == "UNAUTHORIZED"


def test_an_addressed_post_is_typed_into_the_tui_which_reads_replies_and_acks(rig: RealAgent):
    thread_id = rig.thread()
    posted_at = time.time()
    seq = rig.post(thread_id, "please look at the parser")
    job = rig.job(thread_id, seq)
    assert job["status"] == "delivered", (job, rig.attempts(job["trigger_id"]))
    assert rig.attempts(job["trigger_id"])[0] == ("tmux", "typed", None)
    assert_replied(rig, thread_id, seq)
    calls = [c for c in rig.tool_calls() if c["t"] >= posted_at]
    assert [c["tool"] for c in calls][:1] == ["read_messages"] and calls[0]["arguments"]["thread_id"] == thread_id
    # once it acted, the runtime's own session id is known and resumable (Codex names it at its first prompt)
    wait_for(lambda: rig.session()["resumable"] == 1, 15, "a resumable session id")
    assert uuid.UUID(rig.session()["session_id"])
    learned = [json.loads(d) for (d,) in rig.stack.query(
        "SELECT details FROM audit_events WHERE operation = 'runtime_session_learned'")]
    assert [d["session_id"] for d in learned] == ([rig.session()["session_id"]] if rig.kind == "codex" else [])


def test_a_killed_tui_is_resumed_headless_in_its_own_session(rig: RealAgent):
    thread_id = rig.thread()
    first = rig.post(thread_id, "first look")
    assert rig.job(thread_id, first)["status"] == "delivered"
    session_id = wait_for(lambda: rig.session()["resumable"] == 1 and rig.session()["session_id"], 15,
                          "the session id")
    rig.kill_pane()

    read_before = rig.cursor(thread_id)
    second = rig.post(thread_id, "second look, after your terminal closed")
    job = rig.job(thread_id, second)
    assert job["status"] == "resumed", (job, rig.attempts(job["trigger_id"]))
    assert_replied(rig, thread_id, second)
    assert rig.session()["session_id"] == session_id
    # the same conversation went on: the runtime's own transcript of that session holds both wakes
    profile = json.loads(rig.session()["profile"])
    transcripts = list(Path(profile["extra"]["sessions_dir"]).rglob(f"*{session_id}*.jsonl"))
    assert len(transcripts) == 1, transcripts
    text = transcripts[0].read_text()  # each wake's prompt asks to read from what that wake had not seen yet
    assert f"thread_id={thread_id} and since_seq=0 " in text
    assert f"thread_id={thread_id} and since_seq={read_before} " in text and read_before > 0


@pytest.mark.parametrize("bad_id", ["reviewer-7b4784cd", "unknown-uuid"])
def test_a_session_that_cannot_be_resumed_gives_way_to_a_fresh_session_with_the_summary(rig: RealAgent,
                                                                                       bad_id: str):
    """A bridge-style id (not the runtime's own) is never resumed; an unknown UUID is tried, fails, then spawn."""
    thread_id = rig.thread("spawn check: parser regression 7f3a")
    first = rig.post(thread_id, "first look")
    assert rig.job(thread_id, first)["status"] == "delivered"
    rig.kill_pane()
    session_id = str(uuid.uuid4()) if bad_id == "unknown-uuid" else bad_id
    rig.stack.query("UPDATE sessions SET session_id = ?, resumable = 1 WHERE agent_id = ?", (session_id, AGENT))

    second = rig.post(thread_id, "second look")
    job = rig.job(thread_id, second)
    assert job["status"] == "spawned", (job, rig.attempts(job["trigger_id"]))
    before_spawn = [("resume", "skipped", "RESUME_FAILED")] if bad_id != "unknown-uuid" else \
        [("resume", "failed", "RESUME_FAILED")] * 2  # the CLI exits 1: "No conversation found" / "no rollout"
    assert rig.attempts(job["trigger_id"]) == [*before_spawn, ("spawn", "started", None), ("spawn", "spawned", None)]
    assert_replied(rig, thread_id, second)
    session = wait_for(lambda: (s := rig.session())["resumable"] == 1 and s, 15, "the spawned session's id")
    assert session["session_id"] != session_id and uuid.UUID(session["session_id"])
    assert session["tmux_target"] == job["tmux_target"]
    screen = rig.stack.tmux.capture(job["tmux_target"], 2000)
    assert "spawn check: parser regression 7f3a" in screen or thread_id in screen


def test_a_human_typing_in_the_tui_defers_the_trigger_instead_of_clobbering_it(rig: RealAgent):
    target = rig.session()["tmux_target"]
    window = rig.stack.tmux.run("display-message", "-p", "-t", target, "#{window_id}").strip()
    human = rig.stack.attach_human(rig.stack.settings.workspace_tmux_session, window)
    try:
        thread_id = rig.thread()
        human.keep_typing(0.3)
        seq = rig.post(thread_id, "while you type")
        deferred = wait_for(lambda: rig.stack.query(
            "SELECT trigger_id FROM trigger_jobs WHERE thread_id = ? AND defer_reason = 'OPERATOR_BUSY'",
            (thread_id,)), 20, "the trigger to be deferred")
        time.sleep(2)
        assert "BRIDGE_TRIGGER" not in rig.stack.tmux.capture(target)  # nothing typed over the human
        human.stop_typing()
        human.type(b"\x15")  # the human clears their line (Ctrl-U) and walks away
        job = rig.job(thread_id, seq)
        assert job["trigger_id"] == deferred[0][0] and job["status"] == "delivered", rig.attempts(job["trigger_id"])
        assert ("tmux", "deferred", "OPERATOR_BUSY") in rig.attempts(job["trigger_id"])
        assert_replied(rig, thread_id, seq)
    finally:
        human.close()


@pytest.mark.parametrize("scenario", list(pilot.SCENARIOS))
def test_pilot_scenarios_with_real_claude_code_and_codex(scenario: str, tmp_path: Path):
    lines: list[str] = []
    report = pilot.run(scenario, real=True, workdir=tmp_path, say=lines.append, timeout=300)
    assert report.ok, (report.problems, "\n".join(lines))
    if scenario == "review_loop":
        assert (report.status, report.open_items) == ("resolved", 0)
        assert report.events == ["finding_reported", "finding_reported", "fix_pushed", "fix_pushed",
                                 "finding_verified", "finding_rejected", "fix_pushed", "finding_verified"]
    else:
        assert report.status == "active" and report.events.count("finding_reported") == 3
    assert report.wakes_by_path().get("typed", 0) >= 4
