"""The worker never acts twice on one job and never lets one slow job hold up the others (real tmux, real stand-ins,
a live bridge; resume commands are real processes).

- a claim is re-taken right before every side effect: a job another worker took over is not typed again;
- jobs are claimed only as many as one lease covers, each judged at its own time;
- a slow resume command runs beside the loop: another agent's wake is typed and acknowledged meanwhile;
- the storm guard counts resume and spawn commands, not only typing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_wake_fallback import attempt_rows, heartbeat, trigger, use_resume

from bridge.domain import wake
from bridge.domain.authz import Principal
from bridge.services.core import Call
from bridge.services.triggers import force_trigger
from bridge.store import triggers as trigger_store
from bridge.testing.processes import wait_until
from bridge.worker.supervisor import StaleClaim, Supervisor
from bridge.worker.tmux import Tmux


def test_a_job_taken_over_while_its_first_worker_was_busy_is_not_typed_again(wake_stack):
    stack = wake_stack(worker_lease="2s")
    pane = stack.launch_standin("reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    trig = trigger(stack, coord, thread_id, "reviewer")["trigger_id"]

    # worker A claims the job in a batch, then is busy elsewhere past its lease
    now = stack.bridge.clock()
    [stale] = stack.bridge.store.write(lambda c: trigger_store.claim_due(c, "default", now, 2000, "worker-A", 16))
    stack.supervisor.tick(now=now + 2000)  # worker B: the lease lapsed, B reclaims and types
    stack.run_until(lambda: stack.job(trig)["status"] == "delivered")
    assert stack.tmux.wait_for_text(pane, f"STANDIN ACKED trigger={trig}", 10)

    worker_a = Supervisor(stack.bridge, stack.tmux)
    with pytest.raises(StaleClaim):  # A finally reaches the job it claimed long ago
        worker_a.process(stale, "worker-A", stack.bridge.clock())
    time.sleep(1)  # an Enter or a line typed by A would show by now
    screen = stack.tmux.capture(pane)
    assert screen.count(f"[BRIDGE_TRIGGER id={trig} ") == 1, screen
    assert [a[1] for a in attempt_rows(stack, trig)] == ["typed", "delivered"]


def test_a_tick_claims_only_what_one_lease_covers_and_judges_each_job_at_its_own_time(wake_stack, monkeypatch):
    stack = wake_stack(worker_lease="30s")
    for agent in ("a1", "a2", "a3"):
        stack.launch_standin(agent)
    thread_id, coord = stack.thread("a1", "a2", "a3")
    jobs = [trigger(stack, coord, thread_id, agent)["trigger_id"] for agent in ("a1", "a2", "a3")]
    seen: list[tuple[str, int, list[str | None]]] = []
    original = stack.supervisor.process

    def watched(job: dict[str, Any], token: str, now: int) -> str:
        others = [stack.job(t)["claim_token"] for t in jobs if t != job["trigger_id"]]
        seen.append((job["trigger_id"], now, others))
        time.sleep(0.05)
        return original(job, token, now)

    monkeypatch.setattr(stack.supervisor, "process", watched)
    stack.supervisor.tick()
    assert sorted(t for t, _, _ in seen) == sorted(jobs)  # one tick still reaches every due job
    # a 30 s lease does not cover three typed wakes at their worst (3 tmux calls at 5 s each): one at a time,
    # so while one job is worked on, the others are not held by this worker
    assert stack.supervisor._claim_limit() == 1
    assert all(token is None for _, _, others in seen for token in others), seen
    times = [now for _, now, _ in seen]
    assert times == sorted(times) and times[-1] - times[0] >= 100  # a fresh clock per job, not the tick's


def test_a_slow_resume_command_does_not_hold_up_another_agents_wake(wake_stack, tmp_path):
    stack = wake_stack()
    started, ended = tmp_path / "resume-started", tmp_path / "resume-ended"
    slow = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(6); " \
           f"pathlib.Path({str(ended)!r}).touch()"
    use_resume(stack, [sys.executable, "-c", slow, "{session_id}"])
    stack.token_file("sleeper")
    heartbeat(stack, "sleeper")  # no pane: its wake falls back to the (slow) resume command
    pane = stack.launch_standin("reviewer")
    thread_id, coord = stack.thread("sleeper", "reviewer")
    slow_job = trigger(stack, coord, thread_id, "sleeper")["trigger_id"]
    stack.start_worker()
    assert wait_until(started.exists, 15), "the resume command never started"

    fast_job = trigger(stack, coord, thread_id, "reviewer")["trigger_id"]
    assert wait_until(lambda: stack.job(fast_job)["status"] == "delivered", 15), stack.attempts(fast_job)
    assert not ended.exists(), "the typed wake waited for the other agent's resume command to finish"
    assert stack.tmux.wait_for_text(pane, f"STANDIN ACKED trigger={fast_job}", 5)
    assert stack.job(slow_job)["status"] == "resume"  # still running, still claimed for its command
    assert stack.job(slow_job)["claim_token"] is not None
    assert wait_until(lambda: stack.job(slow_job)["status"] in wake.TERMINAL or
                          stack.job(slow_job)["resume_attempts"] > 0, 20)
    assert ended.exists()


def test_the_storm_guard_counts_resume_commands_too(wake_stack, tmp_path):
    stack = wake_stack(trigger_rate_per_min=3)
    calls = tmp_path / "resume-calls"
    count = f"open({str(calls)!r}, 'a').write('x\\n')"  # exits 0 without reading: a failed resume
    use_resume(stack, [sys.executable, "-c", count, "{session_id}"])
    stack.token_file("sleeper")
    heartbeat(stack, "sleeper")
    thread_id, _ = stack.thread("sleeper", "exec")
    operator = Call(Principal(agent_id="human:ops", workspace_id="default", role="operator", session_id="cli"))
    jobs = [force_trigger(stack.bridge, operator, thread_id, "sleeper", f"round {n}")["trigger_id"] for n in range(4)]
    now = stack.bridge.clock()
    for step in range(12):  # a minute does not pass: every tick at (almost) the same time
        stack.supervisor.tick(now=now + step * 2001)
    ran = len(Path(calls).read_text().splitlines()) if calls.exists() else 0
    counted = stack.bridge.store.read(lambda c: trigger_store.recent_attempt_count(c, thread_id, "sleeper", now - 1))
    assert ran == 3 and counted == 3, (ran, counted)
    deferred = [t for t in jobs if stack.job(t)["defer_reason"] == wake.TRIGGER_RATE_LIMITED]
    assert deferred, [stack.job(t) for t in jobs]
    assert all(stack.job(t)["status"] in ("resume", "spawn") for t in deferred)


def test_a_tmux_that_does_not_answer_is_no_proof_a_pane_is_gone(wake_stack):
    """A stopped or overloaded tmux server times out: the agent stays registered and its wake is retried, not
    failed over to spawn (found by `bridge ops reliability`: a worker resumed from SIGSTOP marked live agents
    offline)."""
    stack = wake_stack()
    pane = stack.launch_standin("reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    server_pid = int(stack.tmux.run("display-message", "-p", "#{pid}").strip())
    stack.supervisor.tmux = Tmux(stack.tmux.socket_name, timeout=0.3)
    trig = trigger(stack, coord, thread_id, "reviewer")["trigger_id"]
    os.kill(server_pid, signal.SIGSTOP)
    try:
        stack.supervisor._last_reconcile = 0
        stack.supervisor.tick()  # reconcile and delivery both probe the silent server
    finally:
        os.kill(server_pid, signal.SIGCONT)
    assert stack.session("reviewer")["status"] != "offline"
    assert stack.job(trig)["status"] == "queued", stack.attempts(trig)
    assert attempt_rows(stack, trig) == [("tmux", "retry", wake.SEND_KEYS_ERROR)]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    assert stack.job(trig)["status"] == "delivered"
    assert stack.tmux.wait_for_text(pane, f"STANDIN ACKED trigger={trig}", 10)
