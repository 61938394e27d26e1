"""Operator side of the wake pipeline: `bridge runtime ...`, `triggers`, `force-trigger`, metrics, health, and
`bridge serve` waking a stand-in end to end with its own worker, then stopping on SIGTERM.

Real tmux on a private socket, real stand-in agents in panes, the CLI on the same database file the live server
uses, and a real `bridge serve` subprocess stopped by PID.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from helpers import new_thread
from wakekit import WakeStack, recorder

from bridge.cli.main import cli
from bridge.domain import wake
from bridge.store import triggers as trigger_store
from bridge.testing.client import metric
from bridge.testing.database import audit_rows
from bridge.testing.processes import settings_env, wait_until
from bridge.testing.tokens import Minter
from bridge.worker.supervisor import Supervisor


@pytest.fixture(autouse=True)
def _no_bridge_env(monkeypatch, tmp_path):
    """The CLI reads BRIDGE_* from the environment: start every test from none, in a scratch directory (so a
    command that missed its --db can never touch a ./bridge.db outside the test)."""
    for name in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def bridge(stack: WakeStack, *args: str) -> Result:
    """Run one `bridge` command in-process on the stack's database file (`--db` goes before any `--`)."""
    cut = args.index("--") if "--" in args else len(args)
    argv = [*args[:cut], "--db", stack.bridge.settings.db, *args[cut:]]
    return CliRunner().invoke(cli, argv, catch_exceptions=False)


def launch(stack: WakeStack, agent_id: str, *extra: str) -> Result:
    """`bridge runtime launch` of a stand-in agent (its token written where the stand-in reads it)."""
    token_file = stack.token_file(agent_id)
    return bridge(stack, "runtime", "launch", "--agent-id", agent_id, "--kind", "generic", "--tmux-socket",
                  stack.tmux.socket_name, "--json", *extra, "--", sys.executable, "-m", "bridge.standin", "--url",
                  stack.live.url, "--token-file", str(token_file), "agent")


def windows(stack: WakeStack, session: str) -> list[tuple[str, str]]:
    out = stack.tmux.run("list-windows", "-t", f"={session}", "-F", "#{window_name}\t#{pane_id}")
    return [tuple(line.split("\t")) for line in out.splitlines() if line]  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------- runtime CLI
def test_runtime_launch_list_pause_resume_stop(wake_stack):
    stack = wake_stack()
    thread_id, _ = stack.thread("reviewer", "helper", "exec", title="operator thread")

    launched = launch(stack, "reviewer", "--session-id", "rev-launch-1", "--actor", "human:ops")
    assert launched.exit_code == 0, launched.output
    out = json.loads(launched.stdout)
    pane = out["tmux_target"]
    assert (out["agent_id"], out["tmux_session"], out["session_id"]) == ("reviewer", "bridge-default",
                                                                         "rev-launch-1")
    assert stack.tmux.has_session("bridge-default")
    assert windows(stack, "bridge-default") == [("reviewer", pane)]
    session = stack.session("reviewer")
    assert (session["management_mode"], session["tmux_target"], session["runtime_kind"]) == ("managed", pane,
                                                                                             "generic")
    assert stack.tmux.wait_for_text(pane, "STANDIN READY agent=reviewer", 15), stack.tmux.capture(pane)
    [row] = audit_rows(stack.db, operation="runtime_launch")
    assert (row["actor"], row["actor_role"], row["outcome"]) == ("human:ops", "operator", "ok")
    assert row["details"]["tmux_target"] == pane and row["details"]["argv"][-1] == "agent"

    # a second launch reuses the workspace session: one more window, named for its agent
    second = launch(stack, "helper")
    assert second.exit_code == 0, second.output
    helper_pane = json.loads(second.stdout)["tmux_target"]
    sessions = stack.tmux.run("list-sessions", "-F", "#{session_name}").split()
    assert sessions == ["bridge-default"]
    assert windows(stack, "bridge-default") == [("reviewer", pane), ("helper", helper_pane)]
    # --tmux-session picks another session (created on demand)
    other = launch(stack, "exec", "--tmux-session", "side-session")
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["tmux_session"] == "side-session"
    assert [name for name, _ in windows(stack, "side-session")] == ["exec"]

    listed = bridge(stack, "runtime", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {r["agent_id"]: r for r in json.loads(listed.stdout)["runtimes"]}
    assert set(rows) == {"reviewer", "helper", "exec"}
    assert {k: rows["reviewer"][k] for k in ("kind", "management_mode", "tmux_target", "paused", "stale")} == {
        "kind": "generic", "management_mode": "managed", "tmux_target": pane, "paused": False, "stale": False}
    human = bridge(stack, "runtime", "list")
    assert human.exit_code == 0 and "reviewer" in human.stdout and "agent_id" in human.stdout

    # pause: a forced trigger waits (RUNTIME_PAUSED) until the runtime is resumed
    paused = bridge(stack, "runtime", "pause", "--agent-id", "reviewer", "--reason", "human at the keyboard",
                    "--actor", "human:ops", "--json")
    assert paused.exit_code == 0, paused.output
    assert json.loads(paused.stdout) == {"agent_id": "reviewer", "paused": True}
    [row] = audit_rows(stack.db, operation="runtime_pause")
    assert (row["actor"], row["reason"], row["details"]) == (
        "human:ops", "human at the keyboard", {"agent_id": "reviewer", "before": False, "after": True})
    rows = {r["agent_id"]: r for r in json.loads(bridge(stack, "runtime", "list", "--json").stdout)["runtimes"]}
    assert (rows["reviewer"]["paused"], rows["helper"]["paused"]) == (True, False)

    forced = bridge(stack, "force-trigger", "--thread-id", thread_id, "--agent-id", "reviewer", "--reason",
                    "release blocker", "--actor", "human:ops", "--json")
    assert forced.exit_code == 0, forced.output
    trig = json.loads(forced.stdout)["trigger_id"]
    assert stack.job(trig)["force"] == 1 and stack.job(trig)["origin"] == "operator"
    [row] = audit_rows(stack.db, operation="force_trigger")
    assert (row["actor"], row["actor_role"], row["reason"], row["thread_id"]) == (
        "human:ops", "operator", "release blocker", thread_id)
    assert row["details"]["trigger_id"] == trig and row["details"]["force"] is True
    for _ in range(3):
        stack.supervisor.tick()
        time.sleep(0.05)
    job = stack.job(trig)
    assert (job["status"], job["defer_reason"]) == ("queued", wake.RUNTIME_PAUSED)
    assert f"id={trig}" not in stack.tmux.capture(pane)
    assert ("tmux", "deferred", wake.RUNTIME_PAUSED) in [(a["stage"], a["outcome"], a["reason_code"])
                                                        for a in stack.attempts(trig)]

    resumed = bridge(stack, "runtime", "resume", "--agent-id", "reviewer", "--reason", "human gone", "--json")
    assert resumed.exit_code == 0, resumed.output
    [row] = audit_rows(stack.db, operation="runtime_resume")
    assert row["details"] == {"agent_id": "reviewer", "before": True, "after": False}
    assert row["actor"].startswith("human:") and row["actor_role"] == "operator" and row["reason"] == "human gone"
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL, 15)
    assert stack.job(trig)["status"] == "delivered", stack.attempts(trig)
    assert stack.tmux.wait_for_text(pane, f"STANDIN ACKED trigger={trig}", 10)

    listed = bridge(stack, "triggers", "--json")
    assert listed.exit_code == 0, listed.output
    [view] = [t for t in json.loads(listed.stdout)["triggers"] if t["trigger_id"] == trig]
    assert (view["status"], view["force"], view["origin"], view["target_agent_id"]) == ("delivered", True,
                                                                                        "operator", "reviewer")
    assert [a["outcome"] for a in view["attempts"]][-2:] == ["typed", "delivered"]
    assert trig in bridge(stack, "triggers").stdout  # the table form

    stopped = bridge(stack, "runtime", "stop", "--agent-id", "reviewer", "--tmux-socket", stack.tmux.socket_name,
                     "--reason", "end of shift", "--json")
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.stdout) == {"agent_id": "reviewer", "status": "offline", "killed_pane": True}
    assert stack.tmux.probe(pane) is None
    assert [name for name, _ in windows(stack, "bridge-default")] == ["helper"]
    assert stack.session("reviewer")["status"] == "offline"
    [row] = audit_rows(stack.db, operation="runtime_stop")
    assert (row["reason"], row["details"]["killed"], row["details"]["tmux_target"]) == ("end of shift", True, pane)


def test_paused_runtime_holds_fallback_jobs_too(wake_stack, tmp_path):
    """`runtime pause`: the agent's triggers wait (RUNTIME_PAUSED) — the resume command does not run either."""
    stack = wake_stack()
    calls = tmp_path / "resume-calls.jsonl"
    runtimes = stack.bridge.settings.runtimes_file
    with open(runtimes, "w") as handle:
        json.dump({"generic": {"resume": recorder(calls, stack), "spawn": None}}, handle)
    stack.supervisor = Supervisor(stack.bridge, stack.tmux)
    stack.api.ok("heartbeat_session", stack.make_token("reviewer"), session_id="reviewer-s1", runtime="generic",
                 status="idle", resumable=True)
    thread_id, coord = stack.thread("reviewer", "exec", title="t")
    assert bridge(stack, "runtime", "pause", "--agent-id", "reviewer", "--reason", "hold").exit_code == 0
    trig = stack.api.ok("trigger_participant", coord, thread_id=thread_id, target_agent_id="reviewer",
                        reason="wake")["trigger_id"]
    assert stack.job(trig)["status"] == "resume"
    for _ in range(3):
        stack.supervisor.tick()
        time.sleep(0.05)
    job = stack.job(trig)
    assert (job["status"], job["defer_reason"]) == ("resume", wake.RUNTIME_PAUSED), stack.attempts(trig)
    assert not calls.exists()
    assert bridge(stack, "runtime", "resume", "--agent-id", "reviewer", "--reason", "go").exit_code == 0
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    assert stack.job(trig)["status"] == "resumed"
    assert [json.loads(line)[0] for line in calls.read_text().splitlines()] == [trig]


def test_operator_commands_exit_codes(wake_stack):
    stack = wake_stack()
    thread_id, coord = stack.thread("reviewer", "exec", title="t")
    sock = stack.tmux.socket_name
    not_found = [
        ("runtime", "pause", "--agent-id", "ghost", "--reason", "r"),
        ("runtime", "resume", "--agent-id", "ghost", "--reason", "r"),
        ("runtime", "stop", "--agent-id", "ghost", "--tmux-socket", sock, "--reason", "r"),
        ("force-trigger", "--thread-id", "thr_000000000000aaaaaaaaaaaa", "--agent-id", "reviewer", "--reason", "r"),
        ("trigger-retry", "--trigger-id", "trg_000000000000aaaaaaaaaaaa", "--reason", "r"),
    ]
    for args in not_found:
        result = bridge(stack, *args, "--json")
        assert result.exit_code == 3, (args, result.output)
        assert json.loads(result.stderr)["error"]["code"] == "NOT_FOUND"
    usage = [
        ("force-trigger", "--thread-id", thread_id, "--agent-id", "reviewer"),  # --reason is required
        ("runtime", "pause", "--agent-id", "reviewer"),  # so it is for every operator mutation
        ("force-trigger", "--thread-id", thread_id, "--agent-id", "stranger", "--reason", "r"),  # not a participant
        ("runtime", "launch", "--agent-id", "x", "--kind", "bogus", "--tmux-socket", sock, "--", "true"),
    ]
    for args in usage:
        assert bridge(stack, *args).exit_code == 2, args
    assert not stack.tmux.has_session("bridge-default")  # nothing was launched
    stack.api.ok("update_thread_status", coord, thread_id=thread_id, status="closed", reason="done")
    closed = bridge(stack, "force-trigger", "--thread-id", thread_id, "--agent-id", "reviewer", "--reason", "r")
    assert closed.exit_code == 1, closed.output
    assert stack.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default")) == []
    refused = [r for r in audit_rows(stack.db, operation="force_trigger") if r["outcome"] == "refused"]
    assert {r["reason"] for r in refused} >= {"THREAD_CLOSED"}


def test_runtime_launch_of_a_command_that_exits_at_once_is_a_typed_error_with_an_audit_row(wake_stack):
    stack = wake_stack()
    result = bridge(stack, "runtime", "launch", "--agent-id", "quitter", "--kind", "generic", "--tmux-socket",
                    stack.tmux.socket_name, "--json", "--", "sh", "-c", "echo no config here; exit 7")
    assert result.exit_code == 4, result.output
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["details"]["reason"]) == ("UNAVAILABLE", "runtime_exited")
    assert error["details"]["exit_status"] in (7, -1)  # -1: tmux 3.3 saw the pane end but recorded no status
    assert "no config here" in error["details"]["output"]
    assert "Traceback" not in result.output
    assert stack.session("quitter") is None  # nothing registered
    assert not stack.tmux.has_session("bridge-default")  # and no dead window left behind (it was the only one)
    [row] = audit_rows(stack.db, operation="runtime_launch")
    assert (row["outcome"], row["reason"], row["details"]["exit_status"]) == \
        ("failed", "runtime_exited", error["details"]["exit_status"])


# ----------------------------------------------------------------------------------------------------- observability
def test_trigger_metrics_and_worker_heartbeat_in_health(wake_stack):
    stack = wake_stack()
    health = stack.api.raw("GET", "/health").body
    assert health["worker"]["last_tick_age_seconds"] is None  # no worker ever ticked on this database

    pane = stack.launch_standin("reviewer")
    thread_id, coord = stack.thread("reviewer", "exec", title="metrics")
    stack.say(thread_id, "ping")
    delivered = stack.supervisor.tick().woken[0]
    stack.run_until(lambda: stack.job(delivered)["status"] in wake.TERMINAL)
    assert stack.job(delivered)["status"] == "delivered"
    assert stack.tmux.wait_for_text(pane, "STANDIN ACKED", 5)
    # a second thread, closed before its trigger runs: that job fails
    other = new_thread(stack.api, coord, ["reviewer", "exec"], title="closing")
    doomed = stack.api.ok("trigger_participant", coord, thread_id=other, target_agent_id="exec",
                          reason="wake")["trigger_id"]
    stack.api.ok("update_thread_status", coord, thread_id=other, status="closed", reason="done")
    stack.run_until(lambda: stack.job(doomed)["status"] in wake.TERMINAL)
    assert stack.job(doomed)["status"] == "failed"

    text = stack.api.raw("GET", "/metrics").body
    assert metric(text, "bridge_trigger_jobs", status="delivered") == 1
    assert metric(text, "bridge_trigger_jobs", status="failed") == 1
    assert metric(text, "bridge_trigger_jobs", status="queued") == 0
    assert metric(text, "bridge_trigger_attempts_total", result="typed") == 1
    assert metric(text, "bridge_trigger_attempts_total", result="delivered") == 1
    assert metric(text, "bridge_trigger_attempts_total", result="THREAD_CLOSED") == 1
    assert metric(text, "bridge_trigger_dispatch_seconds_count") == 1  # delivered only; failures are not dispatch
    assert 0 < metric(text, "bridge_trigger_dispatch_seconds_sum") < 30
    last_tick = metric(text, "bridge_worker_last_tick_timestamp_seconds")
    assert last_tick is not None and abs(time.time() - last_tick) < 30

    stack.supervisor.tick(now=stack.bridge.clock() + 1500)  # past the 1 s beat throttle
    age = stack.api.raw("GET", "/health").body["worker"]["last_tick_age_seconds"]
    assert age is not None and 0 <= age < 5


# ----------------------------------------------------------------------------------------------------- processes
@pytest.mark.slow
def test_bridge_serve_wakes_a_standin_end_to_end_and_stops_on_sigterm(tmp_path, make_parts, private_tmux, harness):
    db = tmp_path / "serve.db"
    parts = make_parts(db=str(db))  # creates the database and the signing key the server will use
    mint = Minter(parts.key, parts.bridge.settings)
    server = harness.serve("serve", worker=True, db=db, env=settings_env(
        tmux_socket=private_tmux.socket_name, worker_poll="5s", ack_timeout="3s", quiet_window="1s"))
    try:
        with requests.Session() as http:
            def call(command: str, token: str, **body: Any) -> dict[str, Any]:
                reply = http.post(f"{server.url}/v1/mcp/{command}", json=body,
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
                assert reply.status_code == 200, (command, reply.status_code, reply.text)
                return reply.json()

            token_file = tmp_path / "reviewer.token"
            token_file.write_text(mint("reviewer"))
            pane = private_tmux.new_window("bridge-default", "reviewer", [
                sys.executable, "-m", "bridge.standin", "--url", server.url, "--token-file", str(token_file), "agent"])
            assert private_tmux.wait_for_text(pane, "STANDIN READY", 15), private_tmux.capture(pane)
            coord = mint("coord", "coordinator")
            thread_id = call("create_thread", coord, title="e2e", type="workflow",
                             participants=["reviewer", "exec"])["thread_id"]
            posted_at = time.monotonic()
            call("post_message", mint("exec"), thread_id=thread_id, schema_version=1, kind="chat", body="wake up")
            # no tick from here: the server's own worker is nudged by the post (poll is 5 s)
            assert private_tmux.wait_for_text(pane, "STANDIN ACKED", 15), (private_tmux.capture(pane),
                                                                            server.log_text())
            assert time.monotonic() - posted_at < 4.5
            jobs = parts.bridge.store.read(lambda c: trigger_store.list_jobs(c, "default", thread_id=thread_id))
            assert len(jobs) == 1
            assert wait_until(lambda: parts.bridge.store.read(
                lambda c: trigger_store.get_job(c, jobs[0]["trigger_id"]))["status"] == "delivered", 10)
            health = http.get(f"{server.url}/health", timeout=10).json()
            assert 0 <= health["worker"]["last_tick_age_seconds"] < 10
        started = time.monotonic()
        assert server.stop(timeout=10) == 0, server.log_text()
        assert time.monotonic() - started < 5
        assert "worker_stopped" in server.log_text()
    finally:
        server.stop()
