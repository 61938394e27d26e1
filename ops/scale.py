"""The scale targets of issue 12: every operation's p95 on a big history against the same on 1k messages, one run.

    python -m bridge_ops.scale [--sizes 1k,1m-one,1m-spread] [--samples 200] [--wake-samples 20]
                               [--serve-arg=--processes=2] [--workdir DIR] [--keep] [--out report.json]

For each size (`<count>[k|m][-one|-spread]`: `-one` puts every message in one thread, `-spread` ~100 per thread)
the run:

1. seeds a database with `bridge ops seed` (four agents, seed-agent-1..4, in every thread) and reads the counts
   back; the seeded sessions are then marked active, so the worker does not resume every seeded agent in every
   thread through the real agent CLIs (only the stand-ins below are ever woken);
2. times `Supervisor.tick()` in this process (no server running): the first tick (which folds the whole seeded
   history into the wake table once), then ticks with nothing new and ticks after one new post;
3. starts `bridge serve` with its worker (FULL, quota and loop guard off, FAST_TIMINGS, `--serve-arg`s) and times,
   client-side over keep-alive HTTP on one thread of the seeded size (the big one for `-one`, a ~100-message one
   for `-spread`): post_message, read_messages first page (since 0) and tail page (the last 50), inbox of
   seed-agent-2 (a participant of every thread), summarize_thread, and post-to-visible and message-to-wake with
   the harness of `bridge ops sli` (a long-poll reader; stand-ins in a private tmux server);
4. sums VmRSS over the server process and all its descendants, then stops everything.

The table gives p50/p95 per size, the ratio of each size's p95 to the baseline's (`1k` when given, else the first
size) and the verdict against the targets: ratio <= 1.2 for every operation and tick, post-to-visible p95 <= 5 ms,
message-to-wake p95 <= 100 ms, server RSS <= 100 MB. An operation stops sampling after `--budget` seconds (at least
5 samples), so one slow operation cannot hold the run for hours; the counts are in the report.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import click
from bridge_ops.report import publish
from bridge_ops.sli import STANDINS, _LongPoller, _measure_visible, _measure_wake, _Recorder, summarize

from bridge.domain.authz import Principal
from bridge.domain.models import PostMessageInput
from bridge.services import messages
from bridge.services.core import Call
from bridge.settings import Settings
from bridge.store.seed import agent_ids, session_id
from bridge.testing import database
from bridge.testing.client import Client
from bridge.testing.processes import bridge_argv, clean_env
from bridge.testing.stack import FAST_TIMINGS, NO_LIMITS, Stack, timing_settings
from bridge.testing.tmux import socket_name
from bridge.wiring import build
from bridge.worker.supervisor import Supervisor
from bridge.worker.tmux import Tmux

PER_SPREAD_THREAD = 100  # messages per thread of a `-spread` size
PAGE = 50
RATIO_TARGET = 1.2
RSS_TARGET_MB = 100.0
ABSOLUTE_TARGETS = {"post_to_visible": 5.0, "message_to_wake": 100.0}  # p95 ms, at every size
MIN_SAMPLES = 5
WARMUP = 3
SERVER_ENV = {**NO_LIMITS, "BRIDGE_SYNCHRONOUS": "FULL", "BRIDGE_LOG_LEVEL": "WARNING"}
WRITER, READER = agent_ids(2)  # seed-agent-1 posts, seed-agent-2 reads (both are in every seeded thread)
HTTP_OPS = ("post_message", "read_first_page", "read_tail_page", "inbox", "summarize_thread", "post_to_visible")
TICK_OPS = ("tick_idle", "tick_one_new")
ROWS = (*HTTP_OPS, "message_to_wake", *TICK_OPS)
_SIZE = re.compile(r"^(\d+)([km]?)(?:-(one|spread))?$")


@dataclass(frozen=True)
class Size:
    """One database to seed: `messages` over `threads`."""

    name: str
    messages: int
    threads: int


def parse_size(text: str) -> Size:
    """`1k`, `100k-one`, `1m-spread`, `200-one`, ... (no suffix: one thread)."""
    match = _SIZE.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r}: expected <count>[k|m][-one|-spread], e.g. 1k, 1m-one, 1m-spread")
    count = int(match[1]) * {"": 1, "k": 1_000, "m": 1_000_000}[match[2]]
    if count < 1:
        raise ValueError(f"{text!r}: a size needs at least one message")
    threads = max(1, count // PER_SPREAD_THREAD) if match[3] == "spread" else 1
    return Size(text.strip().lower(), count, threads)


# --------------------------------------------------------------------------------------------------- the database
def seed_database(path: Path, size: Size) -> dict[str, Any]:
    """`bridge ops seed` into a new file, the seeded sessions marked active; the seed's report and the counts
    read back from the file."""
    done = subprocess.run(bridge_argv("ops", "seed", "--db", str(path), "--threads", str(size.threads),
                                      "--messages", str(size.messages), "--json"),
                          capture_output=True, text=True, check=False, env=clean_env())
    if done.returncode != 0:
        raise RuntimeError(f"bridge ops seed failed ({done.returncode}): {done.stderr[-500:]}")
    conn = apsw.Connection(str(path))
    try:
        conn.execute("UPDATE sessions SET status = 'active' WHERE agent_id LIKE 'seed-%'")
    finally:
        conn.close()
    (threads, messages_count, largest), = database.query(
        path, "SELECT (SELECT COUNT(*) FROM threads), (SELECT COUNT(*) FROM messages),"
              " (SELECT MAX(latest_seq) FROM threads)")
    return {"seed_seconds": json.loads(done.stdout)["seconds"], "threads": threads, "messages": messages_count,
            "largest_thread": largest}


def measured_thread(path: Path) -> tuple[str, int]:
    """(thread id, latest seq) of the thread the operations run on: the biggest (the first of equals)."""
    ((thread_id, latest),) = database.query(
        path, "SELECT thread_id, latest_seq FROM threads ORDER BY latest_seq DESC, thread_id LIMIT 1")
    return thread_id, latest


# --------------------------------------------------------------------------------------------------- worker tick
def measure_ticks(path: Path, thread_id: str, samples: int) -> dict[str, Any]:
    """`Supervisor.tick()` in this process: the first (the history's one-time fold), idle ones, and ones after one
    new post each."""
    settings = Settings.load({"db": str(path), "synchronous": "FULL", "write_quota_per_min": 0,
                              "loop_guard_turns": 0, **timing_settings(FAST_TIMINGS)}, env={})
    parts = build(settings)
    try:
        supervisor = Supervisor(parts.bridge, Tmux(socket_name("bridge-scale-tick")))
        first = _timed(supervisor.tick)
        idle = [_timed(supervisor.tick) for _ in range(samples)]
        call = Call(Principal(agent_id=WRITER, workspace_id=settings.workspace, role="participant",
                              session_id=session_id(WRITER)), request_id="scale")
        one_new = []
        for n in range(samples):
            messages.post_message(parts.bridge, call, PostMessageInput(
                thread_id=thread_id, schema_version=1, kind="chat", body=f"tick probe {n}",
                idempotency_key=f"scale-tick-{n}"))
            one_new.append(_timed(supervisor.tick))
    finally:
        parts.close()
    return {"first_tick_ms": round(first, 3), "tick_idle": summarize(idle), "tick_one_new": summarize(one_new)}


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


# --------------------------------------------------------------------------------------------------- over HTTP
def sample_calls(client: Client, command: str, payload: Callable[[int], dict[str, Any]], samples: int,
                 budget: float) -> dict[str, Any]:
    """Client-side round trips of `samples` calls (after a warm-up), fewer when `budget` seconds run out."""
    for n in range(WARMUP):
        client.call(command, payload(-1 - n))
    values, failed = [], 0
    deadline = time.monotonic() + budget
    for n in range(samples):
        reply = client.call(command, payload(n))
        if reply.ok:
            values.append(reply.ms)
        else:
            failed += 1
        if n + 1 >= MIN_SAMPLES and time.monotonic() > deadline:
            break
    return summarize(values, failed)


def measure_http(stack: Stack, thread_id: str, latest: int, samples: int, budget: float) -> dict[str, Any]:
    """Every HTTP operation on `thread_id` (whose last seq is `latest`), see the module docstring."""
    tokens = {agent: stack.token(agent, session_id=session_id(agent)) for agent in (WRITER, READER)}
    results: dict[str, Any] = {}
    with stack.client(tokens[WRITER]) as writer, stack.client(tokens[READER]) as reader:
        def post(n: int) -> dict[str, Any]:
            return {"thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": f"scale post {n}",
                    "idempotency_key": f"scale-post-{n}"}

        results["read_first_page"] = sample_calls(
            reader, "read_messages", lambda n: {"thread_id": thread_id, "since_seq": 0, "limit": PAGE}, samples, budget)
        results["read_tail_page"] = sample_calls(
            reader, "read_messages", lambda n: {"thread_id": thread_id, "since_seq": max(0, latest - PAGE),
                                                "limit": PAGE}, samples, budget)
        results["inbox"] = sample_calls(reader, "inbox", lambda n: {}, samples, budget)
        results["summarize_thread"] = sample_calls(
            reader, "summarize_thread", lambda n: {"thread_id": thread_id}, samples, budget)
        results["post_message"] = sample_calls(writer, "post_message", post, samples, budget)
        results["post_to_visible"] = _post_to_visible(stack, writer, tokens[READER], thread_id, samples, budget)
    return results


def _post_to_visible(stack: Stack, writer: Client, reader_token: str, thread_id: str, samples: int,
                     budget: float) -> dict[str, Any]:
    """The long-poll wake of `bridge ops sli`: post sent -> the waiting reader's answer carrying it."""
    rec = _Recorder()
    poller = _LongPoller(stack, reader_token, thread_id)
    try:
        last_seq = measured_thread(stack.db)[1]
        deadline = time.monotonic() + budget
        for i in range(samples):
            last_seq = _measure_visible(poller, writer, rec, thread_id, i, last_seq)
            if i + 1 >= MIN_SAMPLES and time.monotonic() > deadline:
                break
    finally:
        poller.close()
    return summarize(rec.ms["post_to_visible"], rec.failed["post_to_visible"])


def measure_wake(stack: Stack, samples: int) -> dict[str, Any]:
    """Message-to-wake and -to-ack with the stand-ins of `bridge ops sli` (a fresh thread per sample)."""
    for agent in STANDINS:
        stack.launch_standin(agent)
    rec = _Recorder()
    with stack.client(stack.token("scale-coordinator", "coordinator")) as coord, \
            stack.client(stack.token("sli-executioner")) as executioner:
        for i in range(samples):
            _measure_wake(stack, coord, executioner, rec, STANDINS[i % len(STANDINS)], i)
    return {"message_to_wake": summarize(rec.ms["message_to_wake"], rec.failed["message_to_wake"]),
            "message_to_ack": summarize(rec.ms["message_to_ack"], rec.failed["message_to_ack"]),
            "errors": rec.errors}


def tree_memory(pid: int) -> dict[str, Any]:
    """Memory of a process and all its descendants (from /proc), in MB: VmRSS summed (pages shared between forked
    processes count once per process) with its anonymous and file-backed parts, and PSS summed (shared pages split
    between their sharers: what the processes cost together); and how many processes were counted."""
    sources = {"status": {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"},
               "smaps_rollup": {"Pss": "pss_mb"}}
    kb = {name: 0 for fields in sources.values() for name in fields.values()}
    pending, seen = [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        with contextlib.suppress(OSError):
            for source, fields in sources.items():
                for line in Path(f"/proc/{current}/{source}").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name in fields:
                        kb[fields[name]] += int(value.split()[0])
            seen.add(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return {**{name: round(value / 1024, 1) for name, value in kb.items()}, "processes": len(seen)}


# --------------------------------------------------------------------------------------------------- one size
def run_size(size: Size, root: Path, *, samples: int, wake_samples: int, budget: float,
             serve_args: tuple[str, ...], serve_env: dict[str, str], keep: bool,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Seed, tick, serve and measure one size in `root/<size>` (see the module docstring), removed after unless
    `keep`; its part of the report."""
    workdir = root / size.name
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "bridge.db"
    log(f"{size.name}: seeding {size.messages} messages over {size.threads} threads")
    seeded = seed_database(db, size)
    thread_id, seeded_latest = measured_thread(db)
    log(f"{size.name}: seeded in {seeded['seed_seconds']} s; worker ticks")
    ticks = measure_ticks(db, thread_id, samples)
    latest = measured_thread(db)[1]  # the ticks posted to it
    log(f"{size.name}: serving (bridge serve {' '.join(serve_args)})")
    with Stack(workdir, env={**SERVER_ENV, **serve_env}, tmux_prefix="bridge-scale", keep=True) as stack:
        server = stack.serve("server", *serve_args, worker=True, timeout=300)
        http = measure_http(stack, thread_id, latest, samples, budget)
        log(f"{size.name}: message-to-wake ({wake_samples} samples)")
        wake = measure_wake(stack, wake_samples)
        memory = tree_memory(server.pid)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"size": size.name, "seeded": {**seeded, "measured_thread_messages": seeded_latest},
            "first_tick_ms": ticks["first_tick_ms"], "server_rss_mb": memory["rss_mb"],
            "server_memory": memory,
            "ops": {**http, "message_to_wake": wake["message_to_wake"], "message_to_ack": wake["message_to_ack"],
                    "tick_idle": ticks["tick_idle"], "tick_one_new": ticks["tick_one_new"]},
            "errors": wake["errors"]}


# --------------------------------------------------------------------------------------------------- verdicts
def verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per operation (ratios of p95 to the baseline's, absolute limits) plus the RSS row."""
    base, others = results[0], results[1:]
    rows = []
    for op in ROWS:
        ratios = {r["size"]: _ratio(r["ops"][op]["p95"], base["ops"][op]["p95"]) for r in others}
        limit = ABSOLUTE_TARGETS.get(op)
        ok = all(v is not None and v <= RATIO_TARGET for v in ratios.values())
        if limit is not None:
            ok = ok and all(r["ops"][op]["p95"] is not None and r["ops"][op]["p95"] <= limit for r in results)
        target = f"ratio<={RATIO_TARGET}" + (f", p95<={limit:g}ms" if limit is not None else "")
        rows.append({"name": op, "ratios": ratios, "target": target, "ok": ok})
    worst = max(r["server_rss_mb"] for r in results)
    rows.append({"name": "server_rss_mb", "ratios": {}, "target": f"<={RSS_TARGET_MB:g}MB", "value": worst,
                 "ok": worst <= RSS_TARGET_MB})
    return rows


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 2)


def run_scale(sizes: list[Size], *, samples: int = 200, wake_samples: int = 20, budget: float = 60.0,
              serve_args: tuple[str, ...] = (), serve_env: dict[str, str] | None = None,
              workdir: Path | None = None, keep: bool = False,
              log: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Measure every size in turn (the first is the baseline); the report."""
    started = time.monotonic()
    with _root(workdir, keep) as root:
        results = [run_size(size, root, samples=samples, wake_samples=wake_samples, budget=budget,
                            serve_args=serve_args, serve_env=serve_env or {}, keep=keep, log=log)
                   for size in sizes]
    rows = verdicts(results)
    return {"sizes": [s.name for s in sizes], "baseline": sizes[0].name, "samples": samples,
            "wake_samples": wake_samples, "budget_s": budget, "serve_args": list(serve_args),
            "serve_env": serve_env or {},
            "workdir": str(root) if keep else None, "results": results, "verdicts": rows,
            "ok": all(r["ok"] for r in rows), "duration_s": round(time.monotonic() - started, 1)}


@contextlib.contextmanager
def _root(workdir: Path | None, keep: bool) -> Iterator[Path]:
    """`workdir` (created if missing), else a temporary directory removed at the end unless `keep`."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    root = Path(tempfile.mkdtemp(prefix="bridge-scale-"))
    try:
        yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- rendering
def format_report(report: dict[str, Any]) -> str:
    """The table: p50/p95 per size, ratio per non-baseline size, target, verdict; then RSS and first ticks."""
    results = report["results"]
    others = [r["size"] for r in results[1:]]
    header = (f"{'operation':<18}" + "".join(f"{name + ' p50/p95 ms':>26}" for name in report["sizes"])
              + "".join(f"{'ratio ' + name:>16}" for name in others) + f"  {'target':<28}verdict")
    lines = [header, "-" * len(header)]
    for row in report["verdicts"]:
        if row["name"] == "server_rss_mb":
            cells = "".join(f"{r['server_rss_mb']:>26}" for r in results) + " " * 16 * len(others)
        else:
            cells = "".join(f"{_pair(r['ops'][row['name']]):>26}" for r in results) + "".join(
                f"{_num(row['ratios'][name]):>16}" for name in others)
        lines.append(f"{row['name']:<18}{cells}  {row['target']:<28}{'PASS' if row['ok'] else 'MISS'}")
    lines.append("")
    for r in results:
        memory = r["server_memory"]
        lines.append(f"{r['size']}: {r['seeded']['messages']} messages, {r['seeded']['threads']} thread(s), seeded "
                     f"in {r['seeded']['seed_seconds']} s; measured thread: {r['seeded']['measured_thread_messages']}"
                     f" messages; first tick (history fold) {r['first_tick_ms']} ms; server memory "
                     f"{memory['rss_mb']} MB RSS in {memory['processes']} process(es) (anon {memory['anon_mb']}, file "
                     f"{memory['file_mb']}; PSS {memory['pss_mb']}); samples "
                     + ", ".join(f"{op} {r['ops'][op]['count']}" for op in ROWS))
    lines.append(f"\n{'ALL PASS' if report['ok'] else 'MISS'} in {report['duration_s']} s")
    return "\n".join(lines)


def _pair(stats: dict[str, Any]) -> str:
    return f"{_num(stats['p50'])} / {_num(stats['p95'])}"


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


@click.command("scale")
@click.option("--sizes", default="1k,1m-one,1m-spread", show_default=True,
              help="Comma-separated <count>[k|m][-one|-spread]; the first is the baseline of the ratios.")
@click.option("--samples", type=click.IntRange(MIN_SAMPLES, 100_000), default=200, show_default=True,
              help="Calls per operation and ticks per kind.")
@click.option("--wake-samples", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Message-to-wake samples per size (each wakes a stand-in in tmux).")
@click.option("--budget", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds one operation may sample before it stops (after at least 5 samples).")
@click.option("--serve-arg", "serve_args", multiple=True, metavar="ARG",
              help="Pass ARG to `bridge serve` (repeatable), e.g. --serve-arg=--processes=2.")
@click.option("--serve-env", "serve_env", multiple=True, metavar="NAME=VALUE",
              help="A BRIDGE_* setting for the server (repeatable), e.g. --serve-env BRIDGE_ENTER_DELAY=0s (the "
                   "stand-in takes a typed line at once; real TUIs keep the default 0.5s between text and Enter).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Seed the databases here instead of a temporary directory.")
@click.option("--keep", is_flag=True, help="Keep the seeded databases and logs.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the JSON report to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def scale(sizes: str, samples: int, wake_samples: int, budget: float, serve_args: tuple[str, ...],
          serve_env: tuple[str, ...], workdir: Path | None, keep: bool, out: str | None, as_json: bool) -> None:
    """Scale targets: p95 of every operation and worker tick on 1M-message histories against 1k, on a real server.

    Also server RSS, post-to-visible and message-to-wake. Exit 0 when every target holds, 1 on a miss, 2 on a
    usage error."""
    try:
        parsed = [parse_size(text) for text in sizes.split(",") if text.strip()]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sizes") from exc
    if not parsed or len({s.name for s in parsed}) != len(parsed):
        raise click.BadParameter("give one or more distinct sizes", param_hint="--sizes")
    if any("=" not in item or not item.startswith("BRIDGE_") for item in serve_env):
        raise click.BadParameter("give BRIDGE_NAME=VALUE", param_hint="--serve-env")
    report = run_scale(parsed, samples=samples, wake_samples=wake_samples, budget=budget, serve_args=serve_args,
                       serve_env=dict(item.split("=", 1) for item in serve_env), workdir=workdir, keep=keep,
                       log=lambda text: click.echo(text, err=True))
    publish(report, format_report(report), as_json=as_json, out=out)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    scale()
