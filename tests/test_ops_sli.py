"""`bridge ops sli` and `bridge ops readiness` as an operator runs them: real subprocesses, a real stack each.

The harness's own arithmetic (percentiles with failures, threshold verdicts, `--threshold` parsing) is tested
in-process; everything else runs `python -m bridge ops ...` and reads the JSON report it writes.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import click
import pytest
from bridge_ops.readiness import command_references, outside, run_help, run_pytest
from bridge_ops.sli import SPEC_THRESHOLDS, compare, parse_thresholds, summarize

from bridge.testing.processes import pid_alive, run_bridge

ROOT = Path(__file__).resolve().parent.parent
LATENCIES = ("post_latency_ms", "read_latency_ms", "post_to_visible_ms", "message_to_wake_ms", "message_to_ack_ms")


# ------------------------------------------------------------------------------------------------ arithmetic
def test_summarize_counts_failures_as_infinite_latency():
    values = [float(v) for v in range(1, 10)]  # 9 successes and 1 failure: 10 % failed, so p95 is a failure
    stats = summarize(values, failed=1)
    assert (stats["count"], stats["failed"], stats["p50"]) == (9, 1, 5.0)
    assert stats["p95"] is None and stats["max"] is None and stats["mean"] is None
    assert summarize(values)["p95"] == 9.0
    assert summarize([])["count"] == 0


def test_compare_uses_lower_bounds_for_rates_and_upper_bounds_for_latencies():
    sli = {"post_success": {"pct": 99.0}, "read_success": {"pct": 99.4},
           "post_to_visible_ms": {"p95": 2000.0}, "message_to_wake_ms": {"p95": None}}
    verdicts = {v["name"]: v for v in compare(sli, SPEC_THRESHOLDS)}
    assert verdicts["post_success_pct"]["ok"] and verdicts["post_to_visible_p95_ms"]["ok"]
    assert not verdicts["read_success_pct"]["ok"]  # 99.4 < 99.5
    assert not verdicts["message_to_wake_p95_ms"]["ok"]  # a missing (failed) percentile breaches
    assert {v["source"] for v in verdicts.values()} == {"default"}
    assert compare(sli, {"post_to_visible_p95_ms": 1.0})[0]["source"] == "override"


def test_threshold_overrides_are_parsed_and_checked():
    assert parse_thresholds(("message_to_ack_p99_ms=250", "read_success_pct=100")) == {
        "message_to_ack_p99_ms": 250.0, "read_success_pct": 100.0}
    for bad in ("nonsense=1", "post_latency_p42_ms=1", "post_latency_p95_ms", "post_latency_p95_ms=fast"):
        with pytest.raises(click.BadParameter):
            parse_thresholds((bad,))
    assert not math.isnan(SPEC_THRESHOLDS["post_success_pct"])


def test_runbook_command_references_resolve_only_against_real_commands():
    page = ("The bridge process holds the lock.\n```console\n$ bridge token revoke --jti X\n"
            "$ bridge ops drill rollback\n```\nThen run `bridge unblock-thread --thread-id T` or `bridge frobnicate`.")
    refs = command_references(page)
    assert refs == {"token revoke", "ops drill rollback", "unblock-thread", "frobnicate"}  # prose is not a command
    assert {r: run_help(r)[0] for r in refs} == {"token revoke": 0, "ops drill rollback": 0, "unblock-thread": 0,
                                                 "frobnicate": 2}
    assert run_help("token frobnicate")[0] == 2
    code, text = run_help("db backup")
    assert code == 0 and text.startswith("Usage: bridge db backup")


def test_pytest_evidence_reports_what_ran_skipped_and_which_databases(tmp_path):
    """The readiness rows read pytest runs through bridge_ops.pytest_evidence: a skip mark, a test skipping itself,
    an xfail and an in-memory database must all show."""
    suite = tmp_path / "suite" / "test_sample.py"
    suite.parent.mkdir()
    suite.write_text(textwrap.dedent("""
        import apsw
        import pytest

        OPEN = []

        def test_on_a_file(tmp_path):
            OPEN.append(apsw.Connection(str(tmp_path / "x.db")))  # still open when the test body ends
            OPEN[0].execute("PRAGMA journal_mode=WAL")

        def test_in_memory():
            apsw.Connection(":memory:")

        @pytest.mark.skip(reason="marked")
        def test_marked():
            pass

        def test_skips_itself():
            pytest.skip("at run time")

        @pytest.mark.xfail
        def test_expected_to_fail():
            raise AssertionError
    """))
    result = run_pytest((str(suite),), tmp_path / "work")
    assert result["exit"] == 0 and not result["ok"]
    assert result["counts"] == {"passed": 2, "skipped": 3}
    assert [t.split("::")[1] for t in result["not_passed"]] == ["test_expected_to_fail", "test_marked",
                                                                "test_skips_itself"]
    assert sorted(m["mark"] for m in result["marked"]) == ["skip", "xfail"]
    assert len(result["databases"]) == 2 and outside(result["databases"], result["basetemp"]) == [""]
    assert [(d["journal_mode"], Path(d["database"]).name) for d in result["durability"]] == [("wal", "x.db")]


# ------------------------------------------------------------------------------------------------ the harness
def test_sli_measures_the_real_stack_and_stops_it(tmp_path):
    out = tmp_path / "sli.json"
    done = run_bridge("ops", "sli", "--iterations", "20", "--out", str(out), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert (report["iterations"], report["completed"], report["aborted"]) == (20, 20, None)
    sli = report["sli"]
    for name in LATENCIES:
        stats = sli[name]
        assert stats["failed"] == 0 and stats["count"] >= 20, (name, stats)
        assert 0 < stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"], (name, stats)
    assert sli["post_success"] == {"ok": 40, "total": 40, "pct": 100.0}  # one post to each of two threads a round
    assert sli["read_success"] == {"ok": 40, "total": 40, "pct": 100.0}  # one long-poll and one read a round
    verdicts = {v["name"]: v for v in report["thresholds"]}
    assert set(SPEC_THRESHOLDS) <= set(verdicts)
    assert all(verdicts[name]["limit"] == limit and verdicts[name]["source"] == "default" and verdicts[name]["ok"]
               for name, limit in SPEC_THRESHOLDS.items())
    assert report["ok"] and report["breaches"] == []
    assert report["wake_jobs"].get("delivered") == 20 and report["last_envelope_acked_in_pane"]
    # the real stack: a separate server process on a FULL database file, tmux stand-ins; all stopped by PID
    stack = report["stack"]
    assert "bridge serve" in stack["server_cmdline"] and stack["url"].startswith("http://127.0.0.1:")
    assert (stack["synchronous"], stack["journal_mode"]) == ("FULL", "wal") and stack["db_bytes"] > 0
    assert stack["worker_heartbeat_age_s"] is not None and len(stack["standins"]) == 2
    started = [stack["server_pid"], stack["tmux_server_pid"], *(s["pid"] for s in stack["standins"])]
    assert not [pid for pid in started if pid_alive(pid)]
    assert "p95 ms" in done.stdout and "verdict: OK" in done.stdout


def test_sli_exits_non_zero_on_a_breach(tmp_path):
    out = tmp_path / "sli.json"
    done = run_bridge("ops", "sli", "--iterations", "3", "--threshold", "message_to_wake_p50_ms=0.001", "--json",
                      "--out", str(out), cwd=ROOT, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    assert not report["ok"] and report["breaches"] == ["message_to_wake_p50_ms"]
    breach = next(v for v in report["thresholds"] if v["name"] == "message_to_wake_p50_ms")
    assert breach["source"] == "override" and breach["value"] > breach["limit"]


def test_sli_refuses_an_unknown_threshold_before_starting_anything():
    done = run_bridge("ops", "sli", "--threshold", "latency=1", cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "--threshold" in done.stderr


# ------------------------------------------------------------------------------------------------ readiness
def test_readiness_runs_the_checklist_and_decides_go(tmp_path):
    out = tmp_path / "readiness.json"
    done = run_bridge("ops", "readiness", "--sli-iterations", "10", "--out", str(out), cwd=ROOT, timeout=900)
    report = json.loads(out.read_text())
    rows = {row["key"]: row for row in report["rows"]}
    failing = {k: r["summary"] for k, r in rows.items() if not r["ok"]}
    assert done.returncode == 0 and report["decision"] == "GO", failing
    assert list(rows) == ["functional", "security", "signals", "drills", "operator", "sli", "risk_db_tests",
                          "risk_benchmark", "risk_operator"]
    for row in rows.values():
        assert row["evidence"]["checks"] and all(c["ok"] for c in row["evidence"]["checks"]), row["key"]
    assert rows["functional"]["evidence"]["wake"]["trigger_id"].startswith("trg_")
    assert {"bridge_auth_failures_total", "bridge_post_to_visible_seconds_count"} <= {
        name.split("{")[0] for name in rows["signals"]["evidence"]["metrics"]}
    assert any("exits 3" in c["check"] for c in rows["operator"]["evidence"]["checks"])
    assert rows["drills"]["evidence"]["records"] and rows["drills"]["evidence"]["exit"] == 0
    assert {v["check"].split(" ")[0] for v in rows["sli"]["evidence"]["checks"]} >= set(SPEC_THRESHOLDS)
    # the risk rows' evidence comes from runs: pytest's collection, the database-backed suite, the benchmark fixtures
    collection = rows["risk_db_tests"]["evidence"]["collection"]
    assert collection["exit"] == 0 and collection["collected"] > 0 and collection["marked"] == []
    assert rows["risk_db_tests"]["evidence"]["tests"]["databases"]["count"] > 0
    assert {(d["journal_mode"], d["synchronous"]) for d in rows["risk_benchmark"]["evidence"]["benchmarks"][
        "durability"]} == {("wal", 2)}
    assert "DECISION: GO" in done.stdout
