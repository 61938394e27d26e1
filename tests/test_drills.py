"""Every runbook drill passes on the real stack and writes its evidence; `bridge ops drill` reports failures.

Each drill (ops/drills/) starts `bridge serve` and whatever else its incident needs in a temporary directory on
127.0.0.1, injects its fault for real, follows its runbook's commands and verifies recovery; everything it started
is stopped by PID before `run_drill` returns.
"""

from __future__ import annotations

import json
from pathlib import Path

import bridge_ops.drills
import pytest
from bridge_ops.drills import DRILL_MODULES, get_drill
from bridge_ops.drills.framework import Drill, DrillContext, run_drill
from click.testing import CliRunner

from bridge.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DRILL_MODULES))
def test_drill_passes_and_writes_its_evidence(name, tmp_path):
    evidence = run_drill(get_drill(name), tmp_path)
    failure = evidence["failure"] or {}
    assert evidence["pass"], f"{failure.get('message')}\n{failure.get('traceback')}\n{failure.get('logs')}"

    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["pass"] is True and record["drill"] == name and record["failure"] is None
    assert record["started_at"] < record["finished_at"] and record["duration_seconds"] > 0
    faults = [e for e in record["timeline"] if e["type"] == "fault"]
    assert faults, "a drill injects a fault"
    assert record["checks"] and all(c["ok"] for c in record["checks"])
    after_fault = [c for c in record["checks"] if c["t"] >= faults[0]["t"]]
    assert after_fault, "recovery is verified after the fault"
    commands = [c for c in record["commands"] if c["what"].startswith("bridge ")]
    assert commands and all(isinstance(c["exit_code"], int) and c["at"] for c in commands)
    assert all("eyJ" not in c["stdout"] + c["what"] for c in record["commands"]), "tokens are redacted"
    assert all(p.get("stopped_at") for p in record["processes"]), record["processes"]
    assert not Path(record["environment"]["workdir"]).exists()
    runbook = (ROOT / record["runbook"]).read_text()
    assert f"bridge ops drill {name}" in runbook, "the runbook names its drill"


def test_every_runbook_has_a_drill_and_every_drill_a_runbook():
    runbooks = {p.stem for p in (ROOT / "runbooks").glob("*.md")} - {"README"}
    assert runbooks == set(DRILL_MODULES)
    for name in DRILL_MODULES:
        drill = get_drill(name)
        assert (drill.name, drill.runbook) == (name, f"runbooks/{name}.md")


def test_drill_cli_lists_and_refuses_bad_usage():
    runner = CliRunner()
    listed = runner.invoke(cli, ["ops", "drill", "--list"])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(DRILL_MODULES)
    assert runner.invoke(cli, ["ops", "drill"]).exit_code == 2
    assert runner.invoke(cli, ["ops", "drill", "no-such-drill"]).exit_code == 2
    assert runner.invoke(cli, ["ops", "drill", "--all", "rollback"]).exit_code == 2


def test_a_failing_drill_exits_1_cleans_up_and_records_why(tmp_path, monkeypatch):
    def broken(ctx: DrillContext) -> None:
        ctx.step("start something, then fail a check")
        proc = ctx.start("sleeper", ["sleep", "30"])
        ctx.fault("nothing really", pid=proc.pid)
        ctx.check(False, "this check fails on purpose")

    drill = Drill(name="broken", title="fails", runbook="runbooks/none.md", injects="-", verifies="-", run=broken)
    monkeypatch.setattr(bridge_ops.drills, "DRILL_MODULES", {"broken": "-"})
    monkeypatch.setattr(bridge_ops.drills, "get_drill", lambda name: drill)
    result = CliRunner().invoke(cli, ["ops", "drill", "broken", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "FAIL broken" in result.stdout
    record = json.loads((tmp_path / "broken.json").read_text())
    assert record["pass"] is False
    assert "this check fails on purpose" in record["failure"]["message"]
    [sleeper] = record["processes"]
    assert sleeper["stopped_at"] and sleeper["exit_code"] == -15  # stopped by PID (SIGTERM) at cleanup
    assert not Path(record["environment"]["workdir"]).exists()
