"""One set of command-line conventions for every `bridge` command, checked on the real click command tree.

- every command that changes something as an operator requires `--reason` (audited) and takes `--actor`;
- every command that reads takes `--json` (tables for people otherwise);
- every `--limit` has the same range (1..200, the API's page cap);
- `runtime launch --url` tells the pane where the bridge is (a bridge on a non-default port works), and the
  `triggers` table shows why a job failed and its last attempt.

Every command must be classified below: a new command fails `test_every_command_is_classified` until someone
decides which rules apply to it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from wakekit import WakeStack

from bridge.cli.main import cli
from bridge.cli.options import DEFAULT_LIMIT, LIMIT_MAX, LIMIT_MIN
from bridge.domain import wake
from bridge.domain.models import MAX_LIMIT
from bridge.testing.processes import run_bridge, settings_env, unused_port
from bridge.worker.supervisor import Supervisor

# An operator changes or ends something that exists: --reason is required and kept in the audit trail.
MUTATIONS = {
    "agent down", "assign-escalation-owner", "escalate-thread", "force-trigger", "freeze",
    "override-close-thread", "reassign-escalation-owner", "runtime pause", "runtime resume", "runtime stop",
    "token revoke", "trigger-retry", "unblock-thread", "unfreeze",
}
# An operator creates something new: audited with what was created (its arguments), no reason asked.
CREATES = {"agent up", "runtime launch", "token issue", "mcp config"}
# Database housekeeping: the file's content as a whole (confirmed with --yes where destructive).
MAINTENANCE = {"db backup", "db copy", "db migrate", "db restore", "db vacuum", "ops seed"}
READS = {
    "audit", "db check", "doctor", "get-escalation-owner", "inspect-thread", "runtime list", "threads",
    "token jwks", "triggers",
}
# Runs that report a result (drills, service levels, readiness, the demo).
RUNS = {"demo", "ops agent-wakes", "ops drill", "ops readiness", "ops scale", "ops sli", "ops stores"}
# Processes that serve until stopped, or write their report to a file: no result document on stdout.
PROCESSES = {"serve", "worker", "mcp", "ops reliability"}
CLASSES = (MUTATIONS, CREATES, MAINTENANCE, READS, RUNS, PROCESSES)


def commands(group: click.Group = cli, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every invocable command: leaves, and groups that run on their own (`bridge mcp`). Through click's own
    lookup (list_commands/get_command), so a lazily imported command is walked too."""
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield path, command
            yield from commands(command, f"{path} ")
        else:
            yield path, command


COMMANDS = dict(commands())


def option(command: click.Command, name: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and name in p.opts), None)


def test_every_command_is_classified():
    classified = [path for members in CLASSES for path in members]
    assert len(classified) == len(set(classified)), "a command is in two classes"
    assert set(COMMANDS) == set(classified)


@pytest.mark.parametrize("path", sorted(MUTATIONS))
def test_every_operator_mutation_requires_a_reason_and_names_its_actor(path):
    command = COMMANDS[path]
    reason = option(command, "--reason")
    assert reason is not None and reason.required, f"{path}: --reason must be required"
    assert option(command, "--actor") is not None, f"{path}: no --actor"


@pytest.mark.parametrize("path", sorted(MUTATIONS))
def test_a_mutation_without_a_reason_is_a_usage_error_before_anything_is_touched(path, tmp_path):
    command = COMMANDS[path]
    argv = path.split()
    for param in command.params:
        if isinstance(param, click.Option) and param.required and param.name != "reason":
            choices = getattr(param.type, "choices", None)
            argv += [param.opts[0], str(choices[0]) if choices else "x"]
    db = tmp_path / "b.db"
    result = CliRunner().invoke(cli, [*argv, "--db", str(db)])
    assert result.exit_code == 2, (path, result.output)
    assert "--reason" in result.output
    assert not db.exists()


def test_only_mutations_and_creations_act_as_an_operator():
    acting = {path for path, command in COMMANDS.items() if option(command, "--actor") is not None}
    assert acting <= MUTATIONS | CREATES | MAINTENANCE
    assert acting >= MUTATIONS


@pytest.mark.parametrize("path", sorted(READS | MUTATIONS | CREATES | MAINTENANCE | RUNS))
def test_every_command_with_a_result_has_json(path):
    json_flag = option(COMMANDS[path], "--json")
    assert json_flag is not None and json_flag.is_flag, f"{path}: no --json"


def test_every_limit_has_the_same_range():
    limits = {path: option(command, "--limit") for path, command in COMMANDS.items()}
    limits = {path: flag for path, flag in limits.items() if flag is not None}
    assert {"audit", "threads", "triggers"} <= set(limits)
    for path, flag in limits.items():
        assert isinstance(flag.type, click.IntRange), path
        assert (flag.type.min, flag.type.max, flag.default) == (LIMIT_MIN, LIMIT_MAX, DEFAULT_LIMIT), path
    assert (LIMIT_MIN, LIMIT_MAX) == (1, MAX_LIMIT)  # the CLI's range is the API's page cap
    runner = CliRunner()
    for path in limits:
        for bad in (str(LIMIT_MIN - 1), str(LIMIT_MAX + 1)):
            assert runner.invoke(cli, [*path.split(), "--limit", bad]).exit_code == 2, (path, bad)


def test_ops_drill_list_as_json():
    from bridge_ops.drills import DRILL_MODULES

    listed = CliRunner().invoke(cli, ["ops", "drill", "--list", "--json"])
    assert listed.exit_code == 0, listed.output
    drills = json.loads(listed.stdout)["drills"]
    assert [d["name"] for d in drills] == list(DRILL_MODULES)
    assert all(d["runbook"] == f"runbooks/{d['name']}.md" and d["title"] for d in drills)


def test_ops_drill_run_as_json_is_one_document_with_each_verdict(tmp_path, monkeypatch):
    import bridge_ops.drills
    from bridge_ops.drills.framework import Drill, DrillContext

    def broken(ctx: DrillContext) -> None:
        ctx.check(False, "this check fails on purpose")

    drill = Drill(name="broken", title="fails", runbook="runbooks/none.md", injects="-", verifies="-", run=broken)
    monkeypatch.setattr(bridge_ops.drills, "DRILL_MODULES", {"broken": "-"})
    monkeypatch.setattr(bridge_ops.drills, "get_drill", lambda name: drill)
    result = CliRunner().invoke(cli, ["ops", "drill", "broken", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)  # stdout is the document alone; the progress lines went to stderr
    assert (doc["pass"], doc["passed"], doc["total"]) == (False, 0, 1)
    [verdict] = doc["drills"]
    assert (verdict["drill"], verdict["pass"]) == ("broken", False)
    assert "this check fails on purpose" in verdict["failure"]
    assert json.loads(Path(verdict["evidence_file"]).read_text())["pass"] is False


# ----------------------------------------------------------------------------------------------- subprocesses
def test_runtime_launch_url_tells_the_pane_where_a_bridge_on_another_port_is(wake_stack):
    stack: WakeStack = wake_stack()
    token_file = stack.token_file("reviewer")
    # The CLI's own settings point at a port nothing listens on; only --url names the live server. The stand-in
    # gets no --url of its own: it finds the bridge through BRIDGE_URL in the pane's environment.
    done = run_bridge("runtime", "launch", "--db", stack.bridge.settings.db, "--tmux-socket", stack.tmux.socket_name,
                      "--agent-id", "reviewer", "--kind", "generic", "--url", stack.live.url, "--json", "--",
                      sys.executable, "-m", "bridge.standin", "--token-file", str(token_file), "agent",
                      env=settings_env(port=unused_port()))
    assert done.returncode == 0, done.stderr
    pane = json.loads(done.stdout)["tmux_target"]
    assert stack.tmux.wait_for_text(pane, "STANDIN READY agent=reviewer", 15), stack.tmux.capture(pane)

    thread_id, coord = stack.thread("reviewer", "exec", title="another port")
    trig = stack.api.ok("trigger_participant", coord, thread_id=thread_id, target_agent_id="reviewer",
                        reason="please review")["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    assert stack.job(trig)["status"] == "delivered", stack.attempts(trig)
    assert stack.tmux.wait_for_text(pane, f"STANDIN ACKED trigger={trig}", 10), stack.tmux.capture(pane)


def test_runtime_launch_refuses_a_url_that_is_not_http(wake_stack):
    stack: WakeStack = wake_stack()
    done = run_bridge("runtime", "launch", "--db", stack.bridge.settings.db, "--tmux-socket", stack.tmux.socket_name,
                      "--agent-id", "reviewer", "--kind", "generic", "--url", "localhost:8765", "--json", "--",
                      "sleep", "30")
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stderr)["error"]["code"] == "INVALID_ARGUMENT"
    assert stack.session("reviewer") is None


def test_triggers_table_shows_why_a_job_failed_and_its_last_attempt(wake_stack):
    stack: WakeStack = wake_stack()
    runtimes = stack.bridge.settings.runtimes_file
    with open(runtimes, "w") as handle:
        json.dump({"generic": {"resume": None, "spawn": None}}, handle)  # nothing can resume or spawn it
    stack.supervisor = Supervisor(stack.bridge, stack.tmux)
    thread_id, coord = stack.thread("newcomer", "exec", title="dead letter")
    trig = stack.api.ok("trigger_participant", coord, thread_id=thread_id, target_agent_id="newcomer",
                        reason="wake")["trigger_id"]
    stack.run_until(lambda: stack.job(trig)["status"] in wake.TERMINAL)
    job = stack.job(trig)
    assert (job["status"], job["result_code"]) == ("failed", wake.SPAWN_FAILED)

    done = run_bridge("triggers", "--db", stack.bridge.settings.db, "--dead")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["trigger_id", "thread_id", "target_agent_id", "status", "origin", "result_code",
                              "deliveries", "created_at", "last_attempt", "why"]
    [row] = [r for r in rows if r.startswith(trig)]
    last = stack.attempts(trig)[-1]
    assert "failed" in row and wake.SPAWN_FAILED in row
    assert f"{last['stage']}/{last['outcome']}" in row  # the last attempt: stage/outcome, then when
    assert job["last_error"] and " ".join(job["last_error"].split())[:60] in row  # the reason, not only a code
