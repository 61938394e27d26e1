"""The wake pipeline's fallback chain, the §9 decision table and job leases, on real parts.

Real tmux (a private socket per test), real stand-in agents in panes, real HTTP to a live bridge, real resume and
spawn commands (argv lists), and real `bridge worker` processes that are SIGTERM'd or `kill -9`'d by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from wakekit import WakeStack, recorder

from bridge.domain import wake
from bridge.store import messages as message_store
from bridge.store import triggers as trigger_store
from bridge.testing.database import audit_rows
from bridge.testing.processes import kill_pids, pid_alive, settings_env, wait_until
from bridge.testing.stack import standin_templates
from bridge.worker.supervisor import StaleClaim, Supervisor

SPEC_OUTPUT_FIELDS = {"trigger_id", "target_agent_id", "action", "result", "job_status", "fallback_action",
                      "target_session_id", "runtime", "management_mode", "session_status", "stale_session",
                      "triggered_at"}
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HOUR_MS = 3_600_000


# ----------------------------------------------------------------------------------------------------- helpers
def heartbeat(stack: WakeStack, agent_id: str, **fields: Any) -> None:
    """The agent heartbeats over HTTP (unmanaged, resumable, idle unless told otherwise)."""
    body = {"session_id": f"{agent_id}-s1", "runtime": "generic-cli", "status": "idle", "resumable": True, **fields}
    stack.api.ok("heartbeat_session", stack.make_token(agent_id), **body)


def trigger(stack: WakeStack, coord: str, thread_id: str, target: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("reason", "please look")
    return stack.api.ok("trigger_participant", coord, thread_id=thread_id, target_agent_id=target, **fields)


def trigger_audits(stack: WakeStack, trigger_id: str) -> list[dict[str, Any]]:
    return [r for r in audit_rows(stack.db) if r["details"].get("trigger_id") == trigger_id]


def attempt_rows(stack: WakeStack, trigger_id: str) -> list[tuple[str, str, str | None]]:
    return [(a["stage"], a["outcome"], a["reason_code"]) for a in stack.attempts(trigger_id)]


def use_resume(stack: WakeStack, resume: list[str]) -> None:
    """The stand-in runtime with `resume` as its resume command, in use (see `use_templates`)."""
    templates = standin_templates(stack.token_dir, stack.live.url)
    templates["generic"]["resume"] = resume
    use_templates(stack, templates)


def use_templates(stack: WakeStack, templates: dict[str, Any]) -> None:
    """Rewrite the runtimes file and give the stack a supervisor that loaded it (adapters are data)."""
    Path(stack.bridge.settings.runtimes_file).write_text(json.dumps(templates))
    supervisor = Supervisor(stack.bridge, stack.tmux)
    supervisor.url = stack.live.url
    stack.supervisor = supervisor


def set_last_heartbeat(stack: WakeStack, agent_id: str, at_ms: int) -> None:
    stack.bridge.store.write(lambda c: c.execute(
        "UPDATE sessions SET last_heartbeat_at = ? WHERE workspace_id = ? AND agent_id = ?",
        (at_ms, stack.bridge.workspace, agent_id)))


def pane_pid(stack: WakeStack, pane: str) -> int:
    return int(stack.tmux.run("display-message", "-p", "-t", pane, "#{pane_pid}").strip())


def windows(stack: WakeStack) -> list[tuple[str, str]]:
    """(window name, pane id) of every window of the workspace tmux session."""
    out = stack.tmux.run("list-windows", "-t", f"={stack.bridge.settings.workspace_tmux_session}", "-F",
                         "#{window_name}\t#{pane_id}")
    return [tuple(line.split("\t")) for line in out.splitlines() if line]  # type: ignore[misc]


def cursor(stack: WakeStack, thread_id: str, agent_id: str) -> int:
    return stack.bridge.store.read(lambda c: message_store.get_cursor(c, thread_id, agent_id)) or 0


# ----------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize(("how", "code"), [("kill_pane", wake.TARGET_NOT_FOUND), ("kill_process", wake.PANE_DEAD)])
def test_pane_gone_marks_runtime_offline_and_wake_resumes_the_session(wake_stack, how, code):
    stack = wake_stack()
    pane = stack.launch_standin("reviewer")
    thread_id, _ = stack.thread("reviewer", "exec")
    if how == "kill_pane":
        stack.tmux.kill_pane(pane)
    else:
        os.kill(pane_pid(stack, pane), signal.SIGKILL)
        assert wait_until(lambda: (p := stack.tmux.probe(pane)) is not None and p.dead, 10)
    report = stack.supervisor.tick()
    assert report.offline == ["reviewer"]
    assert stack.session("reviewer")["status"] == "offline"
    offline = audit_rows(stack.db, operation="runtime_offline")
    assert [(r["reason"], r["details"]["agent_id"]) for r in offline] == [(code, "reviewer")]
    assert stack.supervisor.tick().offline == []  # marked once, not on every tick

    posted = stack.api.ok("post_message", stack.make_token("exec"), thread_id=thread_id, schema_version=1,
                          kind="chat", body="please review the patch")
    woken = stack.supervisor.tick().woken
    assert len(woken) == 1
    trig = woken[0]
    decision = json.loads(stack.job(trig)["decision"])  # the job may already have run in that same tick
    assert (decision["job_status"], decision["action"], decision["fallback_action"]) == (
        "resume", "fallback_required", "resume_session")
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    job = stack.job(trig)
    assert job["status"] == "resumed", (job, stack.attempts(trig))
    assert job["result_code"] is None and job["finished_at"] is not None
    # the stand-in's resume command read the thread and acknowledged it
    assert cursor(stack, thread_id, "reviewer") == posted["seq"]
    assert attempt_rows(stack, trig) == [("resume", "resumed", None)]
    assert [r["operation"] for r in trigger_audits(stack, trig)] == ["auto_wake", "trigger_resumed"]
    # resumed once: no second job for the same unread message
    assert len(stack.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default", thread_id=thread_id))) == 1


def test_resume_failing_twice_spawns_a_managed_window_with_the_thread_summary(wake_stack):
    stack = wake_stack(resume_fails=True)
    stack.launch_standin("exec")  # keeps the workspace tmux session alive: the spawn must add a window to it
    pane = stack.launch_standin("reviewer")
    title = "Spawn check: parser regression 7f3a"
    thread_id, coord = stack.thread("reviewer", "exec", title=title)
    stack.tmux.kill_pane(pane)
    assert stack.supervisor.tick().offline == ["reviewer"]

    out = trigger(stack, coord, thread_id, "reviewer", reason="re-review needed")
    # posted after the trigger: automatic wake finds the job in flight and adds none
    stack.api.ok("post_message", stack.make_token("exec"), thread_id=thread_id, schema_version=1, kind="chat",
                 body="found a regression in the parser")
    assert (out["action"], out["job_status"], out["fallback_action"]) == ("fallback_required", "resume",
                                                                         "resume_session")
    trig = out["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL, 30)
    job = stack.job(trig)
    assert job["status"] == "spawned", (job, stack.attempts(trig))
    assert job["resume_attempts"] == 2
    assert attempt_rows(stack, trig) == [("resume", "failed", wake.RESUME_FAILED),
                                         ("resume", "failed", wake.RESUME_FAILED),
                                         ("spawn", "started", None), ("spawn", "spawned", None)]
    assert all("exit 1" in a["detail"] for a in stack.attempts(trig)[:2])
    reasons = [(r["operation"], r["reason"]) for r in trigger_audits(stack, trig)]
    assert reasons == [("trigger_participant", "re-review needed"), ("trigger_resume", wake.RESUME_FAILED),
                       ("trigger_spawn", wake.RESUME_FAILED), ("trigger_spawned", None)]
    failures = stack.bridge.store.read(lambda c: trigger_store.runtime_failures_since(c, "default", "reviewer", 0))
    assert failures == 2

    # a new window named for the agent, in the workspace session, running the stand-in
    new_pane = job["tmux_target"]
    assert ("reviewer", new_pane) in windows(stack)
    assert [name for name, _ in windows(stack)].count("reviewer") == 1
    assert stack.tmux.wait_for_text(new_pane, f"STANDIN READ thread={thread_id}", 15), stack.tmux.capture(new_pane)
    # its first prompt carries the §6 summary (argv of the pane's process, never a shell)
    argv = Path(f"/proc/{pane_pid(stack, new_pane)}/cmdline").read_bytes().decode().split("\0")
    assert argv[:3] == [sys.executable, "-m", "bridge.standin"]
    prompt = argv[argv.index("--first-prompt") + 1]
    assert "Thread summary:" in prompt and title in prompt and thread_id in prompt
    assert "found a regression in the parser" in prompt
    # registry: managed, in the new pane, alive
    assert wait_until(lambda: stack.session("reviewer")["status"] != "offline", 10)
    session = stack.session("reviewer")
    assert (session["management_mode"], session["tmux_target"]) == ("managed", new_pane)
    assert cursor(stack, thread_id, "reviewer") >= 1
    assert len(stack.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default", thread_id=thread_id))) == 1


def test_stale_session_skips_resume_with_session_stale(wake_stack, tmp_path):
    stack = wake_stack()
    calls = tmp_path / "resume-calls.jsonl"
    use_resume(stack, recorder(calls, stack))
    stack.token_file("sleeper")
    heartbeat(stack, "sleeper")
    thread_id, coord = stack.thread("sleeper", "exec", title="stale thread")
    out = trigger(stack, coord, thread_id, "sleeper")
    assert (out["job_status"], out["stale_session"]) == ("resume", False)
    set_last_heartbeat(stack, "sleeper", stack.bridge.clock() - 13 * HOUR_MS)  # silent for 13 h since
    trig = out["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    assert stack.job(trig)["status"] == "spawned", stack.attempts(trig)
    assert attempt_rows(stack, trig) == [("resume", "skipped", wake.SESSION_STALE), ("spawn", "started", None),
                                         ("spawn", "spawned", None)]
    assert ("trigger_spawn", wake.SESSION_STALE) in [(r["operation"], r["reason"]) for r in trigger_audits(stack, trig)]
    assert not calls.exists(), "the resume command of a stale session must not run"
    assert stack.tmux.wait_for_text(stack.job(trig)["tmux_target"], f"STANDIN READ thread={thread_id}", 15)


def test_session_stale_setting_is_honoured(wake_stack):
    stack = wake_stack(session_stale="1s")
    heartbeat(stack, "sleeper")
    thread_id, coord = stack.thread("sleeper", "exec")
    assert trigger(stack, coord, thread_id, "sleeper")["job_status"] == "resume"
    time.sleep(1.1)
    out = trigger(stack, coord, thread_id, "sleeper", reason="again")
    assert (out["job_status"], out["fallback_action"], out["stale_session"]) == ("spawn", "spawn_session", True)


def test_crash_loop_skips_resume_only_at_three_recent_failures(wake_stack, tmp_path):
    stack = wake_stack()
    calls = tmp_path / "resume-calls.jsonl"
    use_resume(stack, recorder(calls, stack))
    now = stack.bridge.clock()
    failures = {"two_recent": [now - 60_000] * 2, "three_old": [now - 16 * 60_000] * 3,
                "three_recent": [now - 14 * 60_000, now - 60_000, now - 1000]}
    for agent, times in failures.items():
        stack.token_file(agent)
        heartbeat(stack, agent)
        for at in times:
            stack.bridge.store.write(lambda c, a=agent, t=at: trigger_store.record_runtime_failure(
                c, "default", a, "resume", t))
    thread_id, coord = stack.thread(*failures, title="crash loop")
    jobs = {agent: trigger(stack, coord, thread_id, agent)["trigger_id"] for agent in failures}
    assert {stack.job(t)["status"] for t in jobs.values()} == {"resume"}
    stack.run_until(lambda: all(stack.job(t)["status"] in wake.TERMINAL for t in jobs.values()))
    assert stack.job(jobs["two_recent"])["status"] == "resumed"
    assert stack.job(jobs["three_old"])["status"] == "resumed"
    looping = jobs["three_recent"]
    assert stack.job(looping)["status"] == "spawned"
    assert attempt_rows(stack, looping) == [("resume", "skipped", wake.CRASH_LOOP), ("spawn", "started", None),
                                            ("spawn", "spawned", None)]
    assert ("trigger_spawn", wake.CRASH_LOOP) in [(r["operation"], r["reason"]) for r in trigger_audits(stack, looping)]
    resumed = [json.loads(line)[0] for line in calls.read_text().splitlines()]
    assert sorted(resumed) == sorted([jobs["two_recent"], jobs["three_old"]])


def test_a_resume_that_exits_0_without_the_agent_reading_is_a_failure(wake_stack, tmp_path):
    """Both real CLIs exit 0 after denying a tool: only the agent's own read or heartbeat counts."""
    stack = wake_stack()
    use_resume(stack, [sys.executable, "-c", "print('I did nothing')", "{session_id}"])
    stack.token_file("reviewer")
    heartbeat(stack, "reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    trig = trigger(stack, coord, thread_id, "reviewer")["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL, 30)
    assert attempt_rows(stack, trig)[:2] == [("resume", "failed", wake.RESUME_FAILED)] * 2
    assert all(a["detail"] == "exit 0 without reading or acknowledging the thread"
               for a in stack.attempts(trig)[:2])
    assert stack.job(trig)["status"] == "spawned"  # the spawned stand-in did read and acknowledge


def test_resume_command_is_an_argv_list_never_a_shell(wake_stack, tmp_path):
    stack = wake_stack()
    calls = tmp_path / "resume-calls.jsonl"
    use_templates(stack, {"generic": {"resume": recorder(calls, stack), "spawn": None}})
    heartbeat(stack, "reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    marker = tmp_path / "pwned"
    prompt = f"look at $(touch {marker}) `touch {marker}`; touch {marker} && echo 'quoted \"x\"' | cat"
    trig = trigger(stack, coord, thread_id, "reviewer", trigger_prompt=prompt)["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    assert stack.job(trig)["status"] == "resumed"
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [[trig, "reviewer-s1", prompt]]
    assert not marker.exists()


def test_resume_command_timeout_kills_the_command_and_its_children(wake_stack, tmp_path):
    stack = wake_stack(command_timeout="1s", resume_attempts=1)
    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "open(sys.argv[1], 'w').write(str(child.pid))\n"
              "time.sleep(60)\n")
    use_templates(stack, {"generic": {"resume": [sys.executable, "-c", script, str(pid_file)], "spawn": None}})
    heartbeat(stack, "reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    trig = trigger(stack, coord, thread_id, "reviewer")["trigger_id"]
    grandchild = None
    try:
        started = time.monotonic()
        stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL, 20)
        assert time.monotonic() - started < 10
        grandchild = int(pid_file.read_text())
        job = stack.job(trig)
        assert (job["status"], job["result_code"]) == ("failed", wake.SPAWN_FAILED)
        assert attempt_rows(stack, trig) == [("resume", "failed", wake.RESUME_FAILED), ("spawn", "failed",
                                                                                      wake.SPAWN_FAILED)]
        assert "timed out after 1s" in stack.attempts(trig)[0]["detail"]
        assert wait_until(lambda: not pid_alive(grandchild), 5), "the timed-out command's children must be killed"
    finally:
        if grandchild is None and pid_file.exists():
            grandchild = int(pid_file.read_text())
        if grandchild is not None:
            kill_pids([grandchild], grace=0)


# ----------------------------------------------------------------------------------------------------- dead letters
def test_missing_spawn_template_dead_letters_and_trigger_retry_completes_it(wake_stack, monkeypatch):
    from click.testing import CliRunner

    from bridge.cli.main import cli

    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    stack = wake_stack()
    monkeypatch.chdir(stack.token_dir)
    good = standin_templates(stack.token_dir, stack.live.url)
    use_templates(stack, {"generic": {"resume": good["generic"]["resume"], "spawn": None}})
    stack.token_file("newcomer")  # never ran: no session at all
    thread_id, coord = stack.thread("newcomer", "exec", title="dead letter thread")
    out = trigger(stack, coord, thread_id, "newcomer")
    assert (out["job_status"], out["target_session_id"], out["stale_session"]) == ("spawn", None, True)
    trig = out["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    job = stack.job(trig)
    assert (job["status"], job["result_code"]) == ("failed", wake.SPAWN_FAILED)
    assert "no spawn command" in job["last_error"]
    assert ("trigger_failed", wake.SPAWN_FAILED) in [(r["operation"], r["reason"]) for r in trigger_audits(stack, trig)]

    db = stack.bridge.settings.db
    runner = CliRunner()

    def bridge(*args: str) -> Any:
        return runner.invoke(cli, [*args, "--db", db], catch_exceptions=False)

    dead = bridge("triggers", "--dead", "--json")
    assert dead.exit_code == 0, dead.output
    listed = json.loads(dead.stdout)["triggers"]
    assert [(t["trigger_id"], t["status"], t["result_code"]) for t in listed] == [(trig, "failed", wake.SPAWN_FAILED)]
    assert listed[0]["attempts"][-1]["reason_code"] == wake.SPAWN_FAILED

    assert bridge("trigger-retry", "--trigger-id", "trg_nope", "--reason", "x").exit_code == 3
    retried = bridge("trigger-retry", "--trigger-id", trig, "--reason", "spawn template installed", "--json",
                     "--actor", "human:ops")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["job_status"] == "spawn"
    assert stack.job(trig)["status"] == "spawn"
    retry_audit = [r for r in audit_rows(stack.db, operation="trigger_retry") if r["details"].get("trigger_id") == trig]
    assert [(r["actor"], r["actor_role"], r["reason"]) for r in retry_audit] == [
        ("human:ops", "operator", "spawn template installed")]
    assert retry_audit[0]["details"]["previous_result"] == wake.SPAWN_FAILED
    assert json.loads(bridge("triggers", "--dead", "--json").stdout)["triggers"] == []
    # retrying a job that is not failed is refused (exit 1)
    assert bridge("trigger-retry", "--trigger-id", trig, "--reason", "again").exit_code == 1

    use_templates(stack, good)  # the operator fixed the runtimes file
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    job = stack.job(trig)
    assert job["status"] == "spawned", stack.attempts(trig)
    assert stack.tmux.wait_for_text(job["tmux_target"], f"STANDIN READ thread={thread_id}", 15)


# ----------------------------------------------------------------------------------------------------- decision table
def test_trigger_participant_decision_table_over_http(wake_stack):
    stack = wake_stack()
    stack.launch_standin("managed")
    heartbeat(stack, "offline_managed", management_mode="managed", tmux_target="%999", status="offline")
    heartbeat(stack, "unmanaged", runtime="codex_cli")
    heartbeat(stack, "claude_one", runtime="claude-code", management_mode="managed")  # managed, no tmux target
    heartbeat(stack, "not_resumable", resumable=False)
    heartbeat(stack, "stale_managed", management_mode="managed", tmux_target="%1")
    set_last_heartbeat(stack, "stale_managed", stack.bridge.clock() - 13 * HOUR_MS)
    agents = ["managed", "offline_managed", "unmanaged", "claude_one", "not_resumable", "stale_managed", "nobody"]
    thread_id, coord = stack.thread(*agents)
    expected = {
        "managed": ("trigger_runtime", "queued", "queued", None, "generic", "managed", "idle", False),
        "offline_managed": ("fallback_required", "fallback_required", "resume", "resume_session", "generic",
                            "managed", "offline", False),
        "unmanaged": ("fallback_required", "fallback_required", "resume", "resume_session", "codex", "unmanaged",
                      "idle", False),
        "claude_one": ("fallback_required", "fallback_required", "resume", "resume_session", "claude", "managed",
                       "idle", False),
        "not_resumable": ("fallback_required", "fallback_required", "spawn", "spawn_session", "generic",
                          "unmanaged", "idle", False),
        "stale_managed": ("fallback_required", "fallback_required", "spawn", "spawn_session", "generic", "managed",
                          "idle", True),
        "nobody": ("fallback_required", "fallback_required", "spawn", "spawn_session", None, None, None, True),
    }
    for agent, row in expected.items():
        out = trigger(stack, coord, thread_id, agent, reason=f"wake {agent}")
        assert set(out) - {"replayed"} == SPEC_OUTPUT_FIELDS, out
        got = (out["action"], out["result"], out["job_status"], out["fallback_action"], out["runtime"],
               out["management_mode"], out["session_status"], out["stale_session"])
        assert got == row, (agent, out)
        assert out["target_agent_id"] == agent and out["replayed"] is False
        assert out["target_session_id"] == (None if agent == "nobody" else f"{agent}-s1")
        assert ISO_MS_Z.match(out["triggered_at"]), out["triggered_at"]
        job = stack.job(out["trigger_id"])
        assert (job["status"], job["origin"], job["requested_by"]) == (row[2], "api", "coord")
        audit = [r for r in audit_rows(stack.db, operation="trigger_participant")
                 if r["details"].get("trigger_id") == out["trigger_id"]]
        assert [(r["actor"], r["actor_role"], r["thread_id"], r["reason"], r["details"]["job_status"])
                for r in audit] == [("coord", "coordinator", thread_id, f"wake {agent}", row[2])]


def test_trigger_participant_is_idempotent_per_request_id(wake_stack):
    stack = wake_stack()
    heartbeat(stack, "reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    first = trigger(stack, coord, thread_id, "reviewer", request_id="req-1", trigger_prompt="check seq 1")
    again = trigger(stack, coord, thread_id, "reviewer", request_id="req-1", trigger_prompt="check seq 1")
    assert again["trigger_id"] == first["trigger_id"] and again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {k: v for k, v in first.items() if k != "replayed"}
    clash = stack.api.call("trigger_participant", coord, thread_id=thread_id, target_agent_id="reviewer",
                           reason="please look", request_id="req-1", trigger_prompt="something else")
    assert (clash.status, clash.code) == (409, "IDEMPOTENCY_CONFLICT"), clash.body

    def by_header(header: str, **body: Any) -> Any:
        return stack.api.raw("POST", "/v1/mcp/trigger_participant", json={
            "thread_id": thread_id, "target_agent_id": "reviewer", "reason": "please look", **body},
            headers={"Authorization": f"Bearer {coord}", "x-request-id": header})

    one, two = by_header("hdr-7"), by_header("hdr-7")
    assert one.status == two.status == 200, (one.body, two.body)
    assert one.headers["x-request-id"] == "hdr-7"
    assert two.body["trigger_id"] == one.body["trigger_id"] and two.body["replayed"] is True
    assert one.body["trigger_id"] != first["trigger_id"]
    assert by_header("hdr-7", reason="another reason").code == "IDEMPOTENCY_CONFLICT"
    # the body's request_id wins over the header
    body_wins = by_header("hdr-8", request_id="req-1", trigger_prompt="check seq 1")
    assert body_wins.body["trigger_id"] == first["trigger_id"]
    # no request id anywhere: each call is a new job
    assert trigger(stack, coord, thread_id, "reviewer")["trigger_id"] != trigger(stack, coord, thread_id,
                                                                                  "reviewer")["trigger_id"]
    jobs = stack.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default", thread_id=thread_id))
    assert len(jobs) == 4
    audited = [r["details"]["trigger_id"] for r in audit_rows(stack.db, operation="trigger_participant")
               if r["outcome"] == "ok"]
    assert sorted(audited) == sorted(j["trigger_id"] for j in jobs)  # replays are not new jobs


def test_trigger_participant_refusals(wake_stack):
    stack = wake_stack()
    heartbeat(stack, "reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    payload = {"thread_id": thread_id, "target_agent_id": "reviewer", "reason": "wake"}
    participant = stack.api.call("trigger_participant", stack.make_token("exec"), payload)
    assert (participant.status, participant.code) == (403, "FORBIDDEN"), participant.body
    auditor = stack.api.call("trigger_participant", stack.make_token("aud", "auditor"), payload)
    assert (auditor.status, auditor.code) == (403, "FORBIDDEN"), auditor.body
    outsider = stack.api.call("trigger_participant", coord, {**payload, "target_agent_id": "stranger"})
    assert (outsider.status, outsider.code) == (400, "INVALID_ARGUMENT"), outsider.body
    missing = stack.api.call("trigger_participant", coord, {**payload, "thread_id": "thr_000000000000aaaaaaaaaaaa"})
    assert (missing.status, missing.code) == (404, "NOT_FOUND"), missing.body
    stack.api.ok("update_thread_status", coord, thread_id=thread_id, status="closed", reason="done")
    closed = stack.api.call("trigger_participant", coord, payload)
    assert (closed.status, closed.code) == (409, "THREAD_CLOSED"), closed.body
    assert stack.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default")) == []
    refused = [r for r in audit_rows(stack.db, operation="trigger_participant") if r["outcome"] != "ok"]
    assert {r["actor"] for r in refused} >= {"exec", "aud"}


# ----------------------------------------------------------------------------------------------------- leases
def test_expired_lease_is_reclaimed_and_the_stale_worker_result_refused(wake_stack):
    stack = wake_stack(worker_lease="2s")
    pane = stack.launch_standin("reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    trig = trigger(stack, coord, thread_id, "reviewer")["trigger_id"]
    assert stack.job(trig)["status"] == "queued"

    # worker A claims the job, then dies without a word
    now = stack.bridge.clock()
    claimed = stack.bridge.store.write(lambda c: trigger_store.claim_due(c, "default", now, 2000, "worker-A", 16))
    assert [j["trigger_id"] for j in claimed] == [trig]
    assert stack.bridge.store.write(lambda c: trigger_store.claim_due(c, "default", now + 1, 2000, "other", 16)) == []

    before = stack.supervisor.tick(now=now + 1999)  # worker B, lease not yet expired
    assert trig not in [t for t, _ in before.processed]
    assert (stack.job(trig)["status"], stack.job(trig)["claim_token"]) == ("queued", "worker-A")

    after = stack.supervisor.tick(now=now + 2000)  # lease expired: B reclaims and delivers
    assert (trig, "awaiting_ack") in after.processed
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    assert stack.job(trig)["status"] == "delivered"
    assert stack.tmux.wait_for_text(pane, f"STANDIN ACKED trigger={trig}", 10)
    for _ in range(3):
        stack.supervisor.tick()
    screen = stack.tmux.capture(pane)
    assert screen.count(f"[BRIDGE_TRIGGER id={trig} ") == 1, screen  # typed once
    assert screen.count(f"STANDIN TRIGGER id={trig}") == 1, screen  # read once
    assert [a[1] for a in attempt_rows(stack, trig)] == ["typed", "delivered"]

    # A comes back with its stale token: refused, nothing changes
    assert not stack.bridge.store.write(lambda c: trigger_store.update_claimed(
        c, trig, "worker-A", {"status": "failed", "result_code": "LATE"}))
    worker_a = Supervisor(stack.bridge, stack.tmux)
    with pytest.raises(StaleClaim):
        worker_a._finish(claimed[0], "worker-A", now, "delivered", None, "late result")
    job = stack.job(trig)
    assert (job["status"], job["result_code"]) == ("delivered", None)
    assert [a[1] for a in attempt_rows(stack, trig)] == ["typed", "delivered"]


def reviewer_waiting_for_resume(stack: WakeStack) -> str:
    """The reviewer heartbeats (no pane) and is triggered: its job waits for a resume command; the trigger id."""
    heartbeat(stack, "reviewer")
    thread_id, coord = stack.thread("reviewer", "exec")
    return str(trigger(stack, coord, thread_id, "reviewer")["trigger_id"])


def slow_and_fast_runtimes(tmp_path: Path, stack: WakeStack) -> tuple[Path, Path, Path, Path]:
    """Two runtimes files: `slow` (its resume command writes its PID to `slow_pid`, then sleeps 30 s) and `fast`
    (the recorder, appending to `done`); (slow_pid, slow, done, fast)."""
    slow_pid = tmp_path / "slow.pid"
    slow = tmp_path / "slow-runtimes.json"
    slow.write_text(json.dumps({"generic": {"resume": [
        sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(30)",
        str(slow_pid)], "spawn": None}}))
    done = tmp_path / "resumed.jsonl"
    fast = tmp_path / "fast-runtimes.json"
    fast.write_text(json.dumps({"generic": {"resume": recorder(done, stack), "spawn": None}}))
    return slow_pid, slow, done, fast


@pytest.mark.slow
def test_kill_9_worker_mid_job_is_reclaimed_after_the_lease_and_completes_once(wake_stack, harness, tmp_path):
    stack = wake_stack()
    trig = reviewer_waiting_for_resume(stack)
    assert stack.job(trig)["status"] == "resume"

    slow_pid, slow, done, fast = slow_and_fast_runtimes(tmp_path, stack)
    common = {"tmux_socket": stack.tmux.socket_name, "worker_poll": "200ms", "worker_lease": "1s"}
    orphan = None
    worker_a = harness.worker("worker-a", env=settings_env(runtimes_file=slow, command_timeout="4s", **common))
    try:
        assert wait_until(slow_pid.exists, 15), worker_a.log_text()
        assert wait_until(lambda: slow_pid.read_text().strip(), 5)
        orphan = int(slow_pid.read_text())
        held = stack.job(trig)
        assert held["status"] == "resume" and held["claim_token"].startswith("w-")
        assert worker_a.kill9() == -signal.SIGKILL  # mid-job: the resume command is still running
        lease_until = stack.job(trig)["lease_until"]
        assert lease_until > stack.bridge.clock()

        worker_b = harness.worker("worker-b", env=settings_env(runtimes_file=fast, command_timeout="5s", **common))
        assert wait_until(lambda: stack.job(trig)["status"] in wake.TERMINAL, 20), worker_b.log_text()
        job = stack.job(trig)
        assert job["status"] == "resumed", stack.attempts(trig)
        assert job["finished_at"] >= lease_until  # B waited for A's lease
        assert attempt_rows(stack, trig) == [("resume", "resumed", None)]
        time.sleep(0.5)  # a few more of B's ticks: nothing runs twice
        assert [json.loads(line)[0] for line in done.read_text().splitlines()] == [trig]
        started = time.monotonic()
        assert worker_b.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        if orphan is not None:
            kill_pids([orphan], grace=0)


@pytest.mark.slow
def test_sigterm_mid_command_stops_the_worker_quickly_and_releases_the_job(wake_stack, harness, tmp_path):
    stack = wake_stack()
    trig = reviewer_waiting_for_resume(stack)
    slow_pid, slow, done, fast = slow_and_fast_runtimes(tmp_path, stack)
    common = {"tmux_socket": stack.tmux.socket_name, "worker_poll": "200ms", "worker_lease": "20s",
              "command_timeout": "60s"}
    command = None
    worker_a = harness.worker("worker-a", env=settings_env(runtimes_file=slow, **common))
    try:
        assert wait_until(lambda: slow_pid.exists() and slow_pid.read_text().strip(), 15), worker_a.log_text()
        command = int(slow_pid.read_text())
        started = time.monotonic()
        assert worker_a.stop(timeout=40) == 0, worker_a.log_text()
        assert time.monotonic() - started < 5, "SIGTERM must not wait for a running fallback command"
        assert wait_until(lambda: not pid_alive(command), 5), "the command must not outlive the worker"
        job = stack.job(trig)
        assert (job["status"], job["claim_token"], job["lease_until"]) == ("resume", None, None), job
        assert attempt_rows(stack, trig) == [("resume", "interrupted", None)]

        worker_b = harness.worker("worker-b", env=settings_env(runtimes_file=fast, **common))
        assert wait_until(lambda: stack.job(trig)["status"] in wake.TERMINAL, 10), worker_b.log_text()
        assert stack.job(trig)["status"] == "resumed"
        assert [json.loads(line)[0] for line in done.read_text().splitlines()] == [trig]
        assert worker_b.stop() == 0
    finally:
        if command is not None:
            kill_pids([command], grace=0)


@pytest.mark.slow
def test_bridge_worker_process_wakes_a_standin_and_stops_on_sigterm(wake_stack, harness):
    stack = wake_stack()
    pane = stack.launch_standin("reviewer")
    thread_id, _ = stack.thread("reviewer", "exec")
    worker = harness.worker(env=settings_env(tmux_socket=stack.tmux.socket_name,
                                             runtimes_file=stack.bridge.settings.runtimes_file, worker_poll="200ms",
                                             ack_timeout="3s", quiet_window="1s"))
    try:
        stack.say(thread_id, "ping from exec")
        assert stack.tmux.wait_for_text(pane, "STANDIN ACKED", 15), (stack.tmux.capture(pane), worker.log_text())
        jobs = stack.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default", thread_id=thread_id))
        assert wait_until(lambda: stack.job(jobs[0]["trigger_id"])["status"] == "delivered", 10)
        assert len(jobs) == 1 and jobs[0]["origin"] == "auto"
        started = time.monotonic()
        assert worker.stop() == 0, worker.log_text()
        assert time.monotonic() - started < 5
        assert "worker_stopped" in worker.log_text()
    finally:
        worker.kill9()
