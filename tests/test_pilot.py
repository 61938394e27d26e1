"""The pilot review loop end to end on the real stack (server process, tmux, automatic wake), with stand-in agents
playing the scripted personas; `test_real_agents.py` runs the same scenarios with the real Claude Code and Codex."""

from __future__ import annotations

import json

from click.testing import CliRunner

from bridge.cli.main import cli
from bridge.demo import pilot


def audit_operations(stack, thread_id: str) -> list[tuple[str, str | None, str]]:
    """(operation, reason, actor) of every audit event of a thread, in order."""
    return stack.query("SELECT operation, reason, actor FROM audit_events WHERE thread_id = ? ORDER BY audit_id",
                       (thread_id,))


def test_review_loop_with_stand_ins_resolves_with_every_hand_off_woken(tmp_path):
    seen = {}
    report = pilot.run("review_loop", real=False, workdir=tmp_path, say=lambda _line: None, timeout=120,
                       after=lambda stack: seen.update(audit=_audit(stack)))
    assert report.ok, report.problems
    assert (report.status, report.open_items) == ("resolved", 0)
    assert report.events == ["finding_reported", "finding_reported", "fix_pushed", "fix_pushed", "finding_verified",
                             "finding_rejected", "fix_pushed", "finding_verified"]
    # every hand-off was the bridge's automatic wake, typed into the agent's pane and acknowledged
    assert report.wakes_by_path().get("typed", 0) >= 4 and set(report.wakes_by_path()) == {"typed"}
    # the audit trail reconstructs the timeline: thread opened, wakes, their deliveries, the resolve
    trail = seen["audit"][report.thread_id]
    operations = [op for op, _, _ in trail]
    assert trail[0] == ("create_thread", None, "coordinator")
    assert operations.count("auto_wake") == len(report.wakes) == operations.count("trigger_delivered")
    assert [(op, reason) for op, reason, _ in trail if op == "update_thread_status"] == [
        ("update_thread_status", "all findings verified by the reviewer")]


def _audit(stack):
    threads = [row[0] for row in stack.query("SELECT thread_id FROM threads")]
    return {t: audit_operations(stack, t) for t in threads}


def test_loop_guard_blocks_the_repeating_pair_and_the_assigned_owner_unblocks(tmp_path):
    seen = {}
    report = pilot.run("loop_guard", real=False, workdir=tmp_path, say=lambda _line: None, timeout=120,
                       after=lambda stack: seen.update(audit=_audit(stack)))
    assert report.ok, report.problems
    assert report.events.count("finding_reported") == 3 and report.status == "active"
    trail = [(op, reason) for op, reason, _ in seen["audit"][report.thread_id]
             if op in ("update_thread_status", "assign_escalation_owner")]
    assert trail == [("update_thread_status", "loop_guard:repeated_finding:F1"),
                     ("assign_escalation_owner", "coordinator owns the repeated finding"),
                     ("update_thread_status", "owner reviewed the repeated finding; reviewer to re-check by hand")]


def test_bridge_demo_prints_a_live_timeline_and_exits_0(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--workdir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert "tmux -L bridge-ops-" in result.output and "attach -t bridge-default" in result.output
    assert "reviewer     event/finding_reported" in result.output
    reports = json.loads(result.output[result.output.index("[\n"):])
    assert [r["scenario"] for r in reports] == ["review_loop"] and reports[0]["ok"]
