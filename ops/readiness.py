"""`bridge ops readiness`: the seed's go-live checklist as real checks, a go/no-go table with the evidence of each row.

Rows (each one runs something and keeps what it observed):

1. functional acceptance: a scripted pilot workflow end to end on a live stack (`bridge serve` + worker + a stand-in
   reviewer in tmux): create thread, finding, fix_pushed, the reviewer woken in its pane, verification, resolve;
   with `--with-tests`, also the pytest suites of the workflow.
2. security: forged, unsigned, HMAC-confused, expired, over-long, revoked and other-workspace tokens refused, the
   authorization rules, and bad input rejected in the JSON envelope, over real HTTP (+ suites with `--with-tests`).
3. operational signals: /health, /ready, /metrics with every contract metric name, the alert series moving.
4. runbook drills: `bridge ops drill --all` as a subprocess, with the evidence records it writes.
5. operator controls: the operator commands as subprocesses on the live database file, with their exit codes, audited.
6. SLI thresholds: `run_sli` (its own stack) against the service levels of docs/api.md.
7-9. the seed's three accepted risks, each with the evidence that it no longer applies.

Evidence comes from running things, never from reading test source: pytest runs here carry the
`bridge_ops.pytest_evidence` plugin, which reports what was collected (with any skip or xfail mark), each test's
outcome and every SQLite file the tests opened; commands are run and their exit codes and effects read.

The decision is GO only when every row passes; the exit status is 0 on GO and 1 on NO-GO. What the rows run
besides the bridge (pytest with the test extras, tmux) is checked first: without it the command refuses at once
(exit 4, UNAVAILABLE) with the way to install it, instead of failing rows minutes later. On a terminal each row
prints its progress on stderr (`bridge.cli.progress`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from bridge_ops import acceptance
from bridge_ops.acceptance import Evidence, project_root
from bridge_ops.report import publish
from bridge_ops.sli import parse_thresholds, run_sli

from bridge.cli.output import fail
from bridge.cli.progress import Progress
from bridge.errors import Unavailable
from bridge.testing.processes import bridge_argv, clean_env, run_bridge
from bridge.testing.service import ServiceStack, service_stack

# The operator handoff of the seed, command by command.
HANDOFF_COMMANDS = ("inspect-thread", "escalate-thread", "assign-escalation-owner", "reassign-escalation-owner",
                    "get-escalation-owner", "unblock-thread", "override-close-thread")
# pytest suites per row for --with-tests (those present are run).
SUITES = {
    "functional": ("tests/test_smoke.py", "tests/test_lifecycle.py", "tests/test_messages.py",
                   "tests/test_wake_operator.py", "tests/test_wake_delivery.py"),
    "security": ("tests/test_auth.py", "tests/test_authz.py", "tests/test_bad_input.py", "tests/test_jwks_url.py"),
    "signals": ("tests/test_endpoints.py",),
    "operator": ("tests/test_operator_cli.py", "tests/test_cli.py"),
}
DB_SUITES = ("tests/test_store.py", "tests/test_store_writer.py", "tests/test_durability.py")  # with --with-tests
DB_SMOKE = ("tests/test_store.py",)  # always run: proof that the database-backed suite runs here, now
# The benchmark fixtures, run once each (no timing): they must run here, on database files with synchronous=FULL.
BENCH_SMOKE = ("benchmarks/test_bench_messages.py::test_post_message_inprocess",
               "benchmarks/test_bench_messages.py::test_read_messages_inprocess")
SYNCHRONOUS_FULL = 2  # PRAGMA synchronous
# The test extras (pyproject.toml) the pytest runs import: module -> distribution. ruff is not run here.
TEST_EXTRAS = {"pytest": "pytest", "pytest_benchmark": "pytest-benchmark", "requests": "requests",
               "hypothesis": "hypothesis", "schemathesis": "schemathesis"}
INSTALL_HINT = "install them with `pip install -e '.[test]'` and tmux from your package manager, or run ./scripts/test"


@dataclass
class Row:
    key: str
    item: str
    ok: bool
    summary: str
    evidence: dict[str, Any]
    seconds: float


@dataclass
class Options:
    with_tests: bool
    sli_iterations: int
    thresholds: dict[str, float]
    drill_timeout: float
    workdir: Path


# ------------------------------------------------------------------------------------------------ helpers
def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_prerequisites() -> list[str]:
    """What the rows need and this machine lacks: test extras (by distribution name), then tmux."""
    missing = [dist for module, dist in TEST_EXTRAS.items() if not _importable(module)]
    return missing + ([] if shutil.which("tmux") else ["tmux"])


def run_bounded(argv: list[str], timeout: float, cwd: Path) -> tuple[int | None, str, str]:
    """Run a command to completion or `timeout`: then SIGTERM (it stops what it started, as on Ctrl-C), and SIGKILL
    only if it is still there a minute later. (exit code or None on timeout, stdout, stderr)"""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                            cwd=str(cwd))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return proc.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        return None, stdout, f"timed out after {timeout:g}s\n{stderr}"


def run_pytest(targets: tuple[str, ...], workdir: Path, *, extra: tuple[str, ...] = (),
               timeout: float = 900) -> dict[str, Any]:
    """Run pytest on some files or node ids (relative to the project) in a subprocess with the evidence plugin and
    its own `--basetemp` under `workdir`; the result is what the plugin saw (`bridge_ops.pytest_evidence`)."""
    root = project_root()
    present = tuple(t for t in targets if (root / t.split("::")[0]).exists())
    result: dict[str, Any] = {"targets": list(present), "missing": [t for t in targets if t not in present]}
    if not present:
        return {**result, "ok": False, "summary": "no test file found"}
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="pytest-", dir=workdir))
    evidence_file, basetemp = run_dir / "evidence.json", run_dir / "tmp"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bridge_ops.pytest_evidence",
            "--evidence-out", str(evidence_file), "--basetemp", str(basetemp), *extra, *present]
    started = time.monotonic()
    code, stdout, stderr = run_bounded(argv, timeout, root)
    tail = stdout.strip().splitlines()[-1] if stdout.strip() else stderr.strip()[-300:]
    try:
        evidence = json.loads(evidence_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        evidence = {}
    counts = evidence.get("counts", {})
    not_passed = sorted(t for t, outcome in evidence.get("outcomes", {}).items() if outcome != "passed")
    ok = code == 0 and counts.get("passed", 0) > 0 and not not_passed
    return {**result, "command": " ".join(["python", *argv[1:]]), "exit": code, "counts": counts,
            "not_passed": not_passed[:20], "collected": len(evidence.get("collected", [])),
            "marked": evidence.get("marked", []), "collect_errors": evidence.get("collect_errors", []),
            "collect_skips": evidence.get("collect_skips", []), "databases": evidence.get("databases", []),
            "durability": evidence.get("durability", []), "basetemp": str(basetemp), "summary": tail,
            "seconds": round(time.monotonic() - started, 1), "ok": ok}


def as_fact(run: dict[str, Any]) -> dict[str, Any]:
    """A pytest run for the report: the databases it opened as a count and a few paths, not hundreds."""
    databases = run.get("databases", [])
    return {**run, "databases": {"count": len(databases), "first": databases[:5]}}


def outside(databases: list[str], basetemp: str) -> list[str]:
    """The databases that were not files under the run's temporary directory ("" = in-memory or temporary)."""
    return [d for d in databases if not d or not Path(d).is_relative_to(basetemp)]


def _with_suites(ev: Evidence, key: str, options: Options) -> None:
    if options.with_tests and key in SUITES:
        suites = run_pytest(SUITES[key], options.workdir)
        ev.facts["tests"] = as_fact(suites)
        ev.check(f"pytest {' '.join(suites['targets'])}: all passed, none skipped", suites["ok"],
                 {"summary": suites["summary"], "not_passed": suites.get("not_passed")})


def _summary(ev: Evidence, good: str) -> str:
    if ev.ok:
        return good
    failures = ev.failures()
    return f"{len(failures)} of {len(ev.checks)} checks failed: " + "; ".join(failures)[:400]


def _evidence(ev: Evidence) -> dict[str, Any]:
    return {"checks": ev.checks, **ev.facts}


# ------------------------------------------------------------------------------------------------ rows on the stack
def row_functional(stack: ServiceStack, options: Options) -> tuple[Evidence, str]:
    ev = acceptance.pilot_workflow(stack)
    _with_suites(ev, "functional", options)
    wake = ev.facts.get("wake", {})
    return ev, (f"pilot workflow on {stack.url}: thread {ev.facts.get('thread_id')} resolved with no open item; "
                f"reviewer stand-in woken in its tmux pane ({wake.get('trigger_id')}, "
                f"{wake.get('message_to_wake_ms')} ms message-to-wake); {len(ev.checks)} checks")


def row_security(stack: ServiceStack, options: Options) -> tuple[Evidence, str]:
    ev = acceptance.security(stack)
    _with_suites(ev, "security", options)
    return ev, f"{len(ev.checks)} refusals checked over HTTP (tokens, authorization, bad input, audit)"


def row_signals(stack: ServiceStack, options: Options) -> tuple[Evidence, str]:
    ev = acceptance.signals(stack)
    _with_suites(ev, "signals", options)
    return ev, (f"/health, /ready 200; /metrics exposes all {len(acceptance.CONTRACT_METRICS)} contract names; "
                f"alert series moved: {ev.facts.get('metrics')}")


def row_operator(stack: ServiceStack, options: Options) -> tuple[Evidence, str]:
    ev = acceptance.operator_controls(stack)
    _with_suites(ev, "operator", options)
    cli_checks = sum(1 for c in ev.checks if c["check"].count("`bridge ") == 1)
    return ev, (f"{cli_checks} operator commands run on the live database with the expected exit codes "
                f"(0/1/2/3/4), freeze/unfreeze honoured over HTTP, {len(ev.facts.get('audit', []))} audit events")


# ------------------------------------------------------------------------------------------------ other rows
def row_drills(options: Options) -> tuple[Evidence, str]:
    from bridge_ops.cli import COMMANDS as ops_commands

    ev = Evidence()
    if not ev.check("`bridge ops drill` is registered", "drill" in ops_commands, sorted(ops_commands)):
        return ev, "the drill command is not registered in `bridge ops` (ops/cli.py): runbooks are not drill-validated"
    out = options.workdir / "drills"
    argv = bridge_argv("ops", "drill", "--all", "--out", str(out))
    started = time.monotonic()
    code, stdout, stderr = run_bounded(argv, options.drill_timeout, options.workdir)
    records = []
    for path in sorted(out.glob("*.json")) if out.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            doc = json.loads(path.read_text())
            records.append({"drill": doc.get("name", path.stem), "pass": doc.get("pass"),
                            "runbook": doc.get("runbook"), "seconds": doc.get("duration_seconds"),
                            "file": str(path)})
    ev.facts.update({"command": "bridge ops drill --all --out " + str(out), "exit": code,
                     "seconds": round(time.monotonic() - started, 1), "records": records,
                     "output": (stdout.strip().splitlines() or [""])[-12:],
                     "stderr_tail": stderr.strip()[-600:] or None})
    ev.check("`bridge ops drill --all` exits 0", code == 0, {"exit": code, "stderr": stderr.strip()[-300:] or None})
    ev.check("every drill wrote a passing evidence record", records and all(r["pass"] for r in records),
             [(r["drill"], r["pass"]) for r in records])
    passed = [r["drill"] for r in records if r["pass"]]
    return ev, f"{len(passed)}/{len(records)} drills passed with evidence records: {', '.join(passed)}"


def row_sli(options: Options) -> tuple[Evidence, str, dict[str, Any] | None]:
    ev = Evidence()
    report = run_sli(options.sli_iterations, thresholds=options.thresholds, workdir=options.workdir / "sli")
    for verdict in report["thresholds"]:
        ev.check(f"{verdict['name']} {verdict['op']} {verdict['limit']} ({verdict['source']})", verdict["ok"],
                 verdict["value"])
    s = report["sli"]
    ev.facts.update({"iterations": report["iterations"], "sli": s, "stack": report["stack"]})
    return ev, (f"{report['completed']} iterations: post {s['post_success']['pct']} % ok, read "
                f"{s['read_success']['pct']} % ok, p95 post-to-visible {s['post_to_visible_ms']['p95']} ms, "
                f"p95 message-to-wake {s['message_to_wake_ms']['p95']} ms (service levels: 99.0 %, 99.5 %, 2000 ms, "
                f"3000 ms)"), report


def row_risk_db_tests(options: Options, functional_db: dict[str, Any] | None) -> tuple[Evidence, str]:
    """Risk 1 (DB integration suite skipped without Postgres): the store is SQLite, a file the tests always have.

    Evidence: pytest collects the whole suite and reports no skip/xfail mark and no module that skipped itself;
    the database-backed suite runs here and now, every test passes (none skipped), and every database it opened was
    a file under its own temporary directory (none in memory)."""
    ev = Evidence()
    collected = run_pytest(("tests",), options.workdir, extra=("--collect-only",), timeout=300)
    ev.facts["collection"] = {k: collected.get(k) for k in ("command", "exit", "collected", "marked",
                                                             "collect_errors", "collect_skips", "seconds")}
    ev.check("pytest collects tests/ without an error", collected.get("exit") == 0 and collected.get("collected", 0)
             > 0 and not collected.get("collect_errors"), {"exit": collected.get("exit"),
                                                           "errors": collected.get("collect_errors")})
    skipping = collected.get("marked", []) + [{"module": m} for m in collected.get("collect_skips", [])]
    ev.check("no collected test carries a skip/skipif/xfail mark, no module skips itself", not skipping,
             skipping[:10])
    suites = run_pytest(DB_SUITES if options.with_tests else DB_SMOKE, options.workdir)
    ev.facts["tests"] = as_fact(suites)
    ev.check(f"database-backed suite runs here and now: {' '.join(suites['targets'])}: all passed, none skipped",
             suites["ok"], {"summary": suites["summary"], "not_passed": suites.get("not_passed")})
    databases = suites.get("databases", [])
    ev.check("every database the suite opened was a file in its temporary directory (none in memory)",
             bool(databases) and not outside(databases, suites.get("basetemp", "")),
             {"opened": len(databases), "elsewhere": outside(databases, suites.get("basetemp", ""))[:10]})
    if functional_db:
        ev.check("the pilot ran on a real SQLite file in WAL mode", functional_db.get("journal_mode") == "wal"
                 and functional_db.get("db_bytes", 0) > 0,
                 {k: functional_db.get(k) for k in ("db", "db_bytes", "journal_mode", "synchronous")})
    return ev, (f"pytest collected {collected.get('collected')} tests, none marked skip or xfail; "
                f"{suites['summary']} ({' '.join(suites['targets'])}) on {len(databases)} database files; the "
                f"product has no optional database to be missing")


def row_risk_benchmark(options: Options, sli_report: dict[str, Any] | None) -> tuple[Evidence, str]:
    """Risk 2 (SLI benchmark on an in-memory harness): the harness runs the real stack."""
    ev = Evidence()
    if not ev.check("the SLI harness ran", sli_report is not None, None):
        return ev, "the SLI row did not produce a report"
    st = sli_report["stack"]
    ev.check("server is a separate `bridge serve` process", st["server_pid"] != os.getpid()
             and "bridge serve" in (st.get("server_cmdline") or ""), st.get("server_cmdline"))
    ev.check("over TCP on 127.0.0.1", st["url"].startswith("http://127.0.0.1:"), st["url"])
    ev.check("a database file on disk, WAL, synchronous=FULL", st["db_bytes"] > 0 and st["journal_mode"] == "wal"
             and st["synchronous"] == "FULL", {k: st[k] for k in ("db", "db_bytes", "journal_mode", "synchronous")})
    ev.check("the supervisor worker was running (fresh heartbeat)", st.get("worker_heartbeat_age_s") is not None
             and st["worker_heartbeat_age_s"] < 11, st.get("worker_heartbeat_age_s"))
    ev.check("stand-in agents ran in tmux panes", st["tmux_server_pid"] and len(st["standins"]) >= 2,
             st["standins"])
    delivered = sli_report["wake_jobs"].get("delivered", 0)
    ev.check("wakes went through tmux and were acknowledged", delivered > 0, sli_report["wake_jobs"])
    bench = run_pytest(BENCH_SMOKE, options.workdir, extra=("--benchmark-disable",), timeout=300)
    ev.facts["benchmarks"] = as_fact(bench)
    ev.check("the benchmark fixtures run here (once each, untimed): all passed", bench["ok"],
             {"summary": bench["summary"], "not_passed": bench.get("not_passed")})
    seen = bench.get("durability", [])
    ev.check("the benchmarks ran on database files in WAL mode with synchronous=FULL",
             bool(seen) and all(d["journal_mode"] == "wal" and d["synchronous"] == SYNCHRONOUS_FULL
                                and not outside([d["database"]], bench.get("basetemp", "")) for d in seen), seen[:10])
    return ev, (f"SLI measured through `bridge serve` pid {st['server_pid']} on {st['url']}, {st['db_bytes']} B "
                f"WAL file with FULL, worker heartbeat {st.get('worker_heartbeat_age_s')} s, "
                f"{len(st['standins'])} stand-ins in tmux, {delivered} wake jobs delivered; the benchmark fixtures "
                f"ran on {len({d['database'] for d in seen})} WAL/FULL database files")


_FENCE = re.compile(r"```.*?```", re.DOTALL)
_SPAN = re.compile(r"`([^`\n]+)`")
_INVOCATION = re.compile(r"(?:^|[\s$(|;&])bridge((?: [a-z][a-z0-9-]*)+)", re.MULTILINE)


def command_references(markdown: str) -> set[str]:
    """`bridge <words>` as written in the code of a Markdown page (fenced blocks and inline code, not prose)."""
    code = [block.strip("`") for block in _FENCE.findall(markdown)]
    code += _SPAN.findall(_FENCE.sub("", markdown))
    return {match.strip() for text in code for match in _INVOCATION.findall(text)}


def run_help(words: str) -> tuple[int, str]:
    """Run `bridge <words> --help` in this process: (exit code, help text). A path that is not a command exits 2
    (click's usage error); arguments after a command are accepted, as `--help` stops parsing there."""
    from bridge.cli.main import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = cli.main(args=[*words.split(), "--help"], prog_name="bridge", standalone_mode=False)
        except click.ClickException as exc:
            code = exc.exit_code
    return int(code or 0), out.getvalue()


def described(help_text: str) -> bool:
    """True when a help text has a description between its usage line and its options."""
    body = help_text.split("Options:", 1)[0].splitlines()[1:]
    return any(line.strip() for line in body)


def row_risk_operator(operator_row: Row | None) -> tuple[Evidence, str]:
    """Risk 3 (operator controls rely on manual command execution): each workflow is one guided command."""
    ev = Evidence()
    helps = {command: run_help(command) for command in HANDOFF_COMMANDS}
    failing = {c: code for c, (code, _) in helps.items() if code != 0}
    ev.check("`bridge <command> --help` exits 0 for every handoff command of the seed", not failing, failing)
    helpless = [c for c, (code, text) in helps.items() if code == 0 and not described(text)]
    ev.check("each prints a description of what it does", not helpless, helpless)
    ev.check("the operator-controls row ran them with the rule-enforcing exit codes",
             operator_row is not None and operator_row.ok, operator_row.summary if operator_row else None)
    audited = (operator_row.evidence.get("audit") if operator_row else None) or []
    ev.check("their mutations audited without any manual step", len(audited) >= 11, len(audited))
    root = project_root()
    runbooks = sorted((root / "runbooks").glob("*.md"))
    named = {ref for path in runbooks for ref in command_references(path.read_text())}
    unknown = sorted(ref for ref in named if run_help(ref)[0] != 0)
    ev.check("`bridge ... --help` exits 0 for every command the runbooks show", bool(runbooks and named)
             and not unknown, {"runbooks": [p.name for p in runbooks], "commands": len(named), "unknown": unknown})
    listed = run_bridge("ops", "drill", "--list")
    ev.check("`bridge ops drill --list` maps drills to runbooks", listed.returncode == 0 and ".md" in listed.stdout,
             listed.stdout.strip().splitlines()[:10] or listed.stderr.strip()[-300:])
    return ev, (f"{len(HANDOFF_COMMANDS)} handoff workflows are `bridge` commands enforcing the rules and auditing "
                f"themselves; the {len(named)} commands {len(runbooks)} runbook(s) show all run; drills replay them")


# ------------------------------------------------------------------------------------------------ the run
ITEMS = {
    "functional": "Functional acceptance criteria passed for pilot workflow",
    "security": "Security checks passed",
    "signals": "Alerting/operational signals verified",
    "drills": "Runbooks published and drill-validated",
    "operator": "Pilot operator controls verified",
    "sli": "SLI thresholds (the service levels of docs/api.md) met on the real stack",
    "risk_db_tests": "Risk 1 retired: DB-backed tests always run",
    "risk_benchmark": "Risk 2 retired: the SLI benchmark runs on the real stack",
    "risk_operator": "Risk 3 retired: operator workflows are guided commands",
}


def _timed(key: str, fn: Callable[[], tuple[Any, ...]], progress: Progress) -> tuple[Row, Any]:
    started = time.monotonic()
    extra = None
    with progress.step(ITEMS[key]) as step:
        try:
            ev, summary, *rest = fn()
            extra = rest[0] if rest else None
            row = Row(key, ITEMS[key], ev.ok, summary if ev.ok else _summary(ev, summary), _evidence(ev), 0.0)
        except Exception as exc:  # a row that crashes is a failing row with its traceback, never a crashed report
            row = Row(key, ITEMS[key], False, f"check crashed: {exc!r}",
                      {"traceback": traceback.format_exc().splitlines()[-12:]}, 0.0)
        step.verdict = "GO" if row.ok else "NO-GO"
    row.seconds = round(time.monotonic() - started, 1)
    return row, extra


def run_readiness(options: Options, progress: Progress | None = None) -> dict[str, Any]:
    """Run every row; return the report (decision GO only when all pass). `progress` shows each row as it runs."""
    progress = progress if progress is not None else Progress(len(ITEMS), enabled=False)
    started = time.time()
    rows: list[Row] = []
    stack_doc: dict[str, Any] | None = None
    operator_row = None
    try:
        progress.note("starting a live stack (bridge serve, worker, tmux stand-ins) ...")
        with service_stack(options.workdir / "stack") as stack:
            for key, fn in (("functional", row_functional), ("security", row_security), ("signals", row_signals),
                            ("operator", row_operator)):
                row, _ = _timed(key, lambda fn=fn: fn(stack, options), progress)
                rows.append(row)
                operator_row = row if key == "operator" else operator_row
            stack_doc = stack.describe()
    except RuntimeError as exc:  # the stack itself could not start: those rows fail with the reason
        for key in ("functional", "security", "signals", "operator"):
            if key not in {r.key for r in rows}:
                with progress.step(ITEMS[key]) as step:
                    step.verdict = "NO-GO (the stack did not start)"
                rows.append(Row(key, ITEMS[key], False, f"the stack did not start: {exc}", {}, 0.0))
    drills, _ = _timed("drills", lambda: row_drills(options), progress)
    sli_row, sli_report = _timed("sli", lambda: row_sli(options), progress)
    rows += [drills, sli_row]
    rows.append(_timed("risk_db_tests", lambda: row_risk_db_tests(options, stack_doc), progress)[0])
    rows.append(_timed("risk_benchmark", lambda: row_risk_benchmark(options, sli_report), progress)[0])
    rows.append(_timed("risk_operator", lambda: row_risk_operator(operator_row), progress)[0])
    order = list(ITEMS)
    rows.sort(key=lambda r: order.index(r.key))
    go = all(r.ok for r in rows)
    return {"decision": "GO" if go else "NO-GO", "passed": sum(r.ok for r in rows), "rows_total": len(rows),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_s": round(time.time() - started, 1), "with_tests": options.with_tests,
            "stack": stack_doc, "rows": [r.__dict__ for r in rows]}


def format_table(report: dict[str, Any], width: int = 110) -> str:
    """The go/no-go table: one line per row, the evidence summary wrapped under it."""
    import textwrap

    lines = [f"{'#':>2}  {'checklist item':<58} {'verdict':<7} {'time':>6}", "-" * width]
    for n, row in enumerate(report["rows"], 1):
        lines.append(f"{n:>2}  {row['item']:<58} {'GO' if row['ok'] else 'NO-GO':<7} {row['seconds']:>5}s")
        lines += textwrap.wrap(row["summary"], width=width - 6, initial_indent="      ", subsequent_indent="      ")
    lines += ["-" * width, f"DECISION: {report['decision']} ({report['passed']}/{report['rows_total']} rows) "
                           f"in {report['duration_s']} s"]
    return "\n".join(lines)


@click.command("readiness")
@click.option("--with-tests", is_flag=True, help="Also run the pytest suites behind each row (adds ~2 minutes).")
@click.option("--sli-iterations", type=click.IntRange(1, 10_000), default=30, show_default=True,
              help="Iterations of the SLI row.")
@click.option("--threshold", "threshold_args", multiple=True, metavar="NAME=VALUE",
              help="Add or override an SLI threshold (as in `bridge ops sli`).")
@click.option("--drill-timeout", type=click.FloatRange(10, 3600), default=900, show_default=True,
              help="Seconds the drills row may take.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the JSON report to this file.")
@click.option("--keep", is_flag=True, help="Keep the working directory (logs, databases, drill evidence).")
def readiness(with_tests: bool, sli_iterations: int, threshold_args: tuple[str, ...], drill_timeout: float,
              as_json: bool, out: str | None, keep: bool) -> None:
    """Run the go-live checklist for real and print a go/no-go table; exit 0 only on GO."""
    thresholds = parse_thresholds(threshold_args)
    missing = missing_prerequisites()
    if missing:
        fail(Unavailable(f"bridge ops readiness needs the test extras and tmux; missing: {', '.join(missing)}: "
                         f"{INSTALL_HINT}", {"missing": missing}), as_json)
    workdir = Path(tempfile.mkdtemp(prefix="bridge-readiness-"))
    options = Options(with_tests=with_tests, sli_iterations=sli_iterations, thresholds=thresholds,
                      drill_timeout=drill_timeout, workdir=workdir)
    try:
        report = run_readiness(options, Progress(len(ITEMS), as_json=as_json))
    finally:
        if not keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    report["workdir"] = str(workdir) if keep else None
    publish(report, format_table(report), as_json=as_json, out=out)
    sys.exit(0 if report["decision"] == "GO" else 1)
