"""The reliability suite's own parts, without processes: the ledger's audit, the scenario registry, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import bridge_ops.reliability
import pytest
from bridge_ops.reliability import SCENARIOS, NotAvailable, load
from bridge_ops.reliability.figures import Figure
from bridge_ops.reliability.ledger import Ledger
from click.testing import CliRunner

from bridge.cli.main import cli
from bridge.testing.client import Reply


def message(key: str, seq: int, thread: str = "thr_a", message_id: str | None = None, body: str | None = None):
    return {"thread_id": thread, "seq": seq, "message_id": message_id or f"msg_{key}", "kind": "chat",
            "body": body if body is not None else Ledger.body(key, "x")}


def acked(ledger: Ledger, key: str, seq: int, thread: str = "thr_a", **reply) -> None:
    ledger.attempt(key, thread, Ledger.body(key, "x"))
    ledger.record(key, Reply(200, {"seq": seq, "message_id": f"msg_{key}", **reply}))


def test_audit_of_a_faithful_read_back_finds_nothing():
    ledger = Ledger()
    acked(ledger, "a", 1)
    acked(ledger, "b", 2)
    audit = ledger.audit({"thr_a": [message("a", 1), message("b", 2)]})
    assert (audit.acked, audit.lost, audit.gaps, audit.duplicates, audit.unexpected) == (2, [], 0, 0, 0)


def test_audit_finds_lost_changed_gapped_duplicated_and_foreign_messages():
    ledger = Ledger()
    for key, seq in (("a", 1), ("b", 2), ("c", 3), ("d", 5)):
        acked(ledger, key, seq)
    read_back = [message("a", 1), message("b", 2, body="b tampered"), message("d", 5), message("d", 6, "thr_a",
                 "msg_other"), message("zz", 7)]
    audit = ledger.audit({"thr_a": read_back})
    assert audit.lost == ["b", "c"]  # b changed, c missing
    assert audit.gaps == 2  # seqs 3 and 4
    assert audit.duplicates == 1  # d twice
    assert audit.unexpected == 1  # nobody posted zz


def test_ledger_files_refusals_and_doubt_and_sees_refused_writes_that_committed():
    ledger = Ledger()
    ledger.attempt("r", "thr_a", Ledger.body("r"))
    assert ledger.record("r", Reply(503, {"error": {"code": "UNAVAILABLE", "details": {"reason": "disk_full"}}})) \
        == "refused"
    ledger.attempt("q", "thr_a", Ledger.body("q"))
    assert ledger.record("q", Reply(None, error="RemoteDisconnected", sent=True)) == "in_doubt"
    assert ledger.record("q", Reply(None, error="ConnectionRefusedError", sent=False)) == "not_sent"
    assert ledger.record("q", Reply(200, {"seq": 2, "message_id": "msg_q", "replayed": True})) == "acked"
    audit = ledger.audit({"thr_a": [message("r", 1, body="r"), message("q", 2, body="q")]})
    assert ledger.posts["r"].refusals == ["503 UNAVAILABLE/disk_full"]
    assert audit.refused_committed == ["r"] and audit.committed_unacked == 1 and audit.lost == []


def test_registry_order_and_a_missing_module_is_not_available(monkeypatch):
    assert list(SCENARIOS) == ["crash", "writers", "workers", "storage", "hostile", "attacks", "abuse"]
    monkeypatch.setitem(SCENARIOS, "crash", "no_such_scenario_module")
    with pytest.raises(NotAvailable):
        load("crash")
    assert callable(load("writers"))


def test_bridge_starts_without_importing_any_scenario():
    code = ("import sys, bridge_ops.cli; loaded = [m for m in sys.modules if m.startswith('bridge_ops.reliability.') "
            "and m not in ('bridge_ops.reliability.cli',)]; print(loaded)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture
def fake_scenarios(monkeypatch):
    """Three scenarios without processes: one passing, one failing a target, one raising; `attacks` missing."""
    def module(name: str, run) -> str:
        mod = types.ModuleType(f"bridge_ops.reliability.{name}")
        mod.run = run
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        return name

    ok = module("fake_ok", lambda scale, workdir: [Figure("fake", "things lost", 0, 10 * scale.n, "0", True)])
    bad = module("fake_bad", lambda scale, workdir: [Figure("fake", "p99", 1234.5, None, "< 1000 ms", False,
                                                            unit="ms")])

    def boom(scale, workdir):
        raise RuntimeError("the server did not start")

    broken = module("fake_broken", boom)
    monkeypatch.setattr(bridge_ops.reliability, "SCENARIOS", {"crash": ok, "writers": bad, "workers": broken,
                                                       "attacks": "no_such_scenario_module"})
    monkeypatch.setattr("bridge_ops.reliability.cli.SCENARIOS", bridge_ops.reliability.SCENARIOS)


def test_cli_prints_the_table_writes_json_and_fails_on_a_missed_target(fake_scenarios, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["ops", "reliability", "--scale", "3", "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["area", "measure", "figure", "target", "verdict"]
    assert any(line.split()[-5:] == ["0", "of", "30", "0", "PASS"] for line in lines), result.stdout
    assert any("1234.5 ms" in line and line.rstrip().endswith("FAIL") for line in lines), result.stdout
    assert any("ERROR" in line and "the server did not start" in line for line in lines), result.stdout
    assert any("N/A" in line and "not available" in line for line in lines), result.stdout
    report = json.loads(out.read_text())
    assert report["passed"] is False and report["scale"] == 3
    assert [(s["name"], s["status"]) for s in report["scenarios"]] == [
        ("crash", "ok"), ("writers", "ok"), ("workers", "error"), ("attacks", "not available")]
    assert report["scenarios"][0]["figures"][0] == {"area": "fake", "measure": "things lost", "count": 0,
                                                    "total": 30, "target": "0", "passed": True, "unit": "",
                                                    "note": ""}


def test_cli_only_runs_the_named_scenarios_in_suite_order_and_passes(fake_scenarios):
    result = CliRunner().invoke(cli, ["ops", "reliability", "--only", "crash"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout.splitlines()[-1]
    result = CliRunner().invoke(cli, ["ops", "reliability", "--only", "writers", "crash"])
    assert result.exit_code == 1
    rows = result.stdout.splitlines()[2:4]
    assert "things lost" in rows[0] and "p99" in rows[1], result.stdout  # crash before writers, as in the suite


def test_cli_refuses_an_unknown_scenario():
    result = CliRunner().invoke(cli, ["ops", "reliability", "--only", "nope"])
    assert result.exit_code == 2 and "unknown scenario(s): nope" in result.output
