"""The SLI harness (docs/api.md): `bridge ops sli [--iterations N] [--out report.json] [--threshold NAME=VALUE]`.

Measured on the real stack (`bridge.testing.service.service_stack`: `bridge serve` as a child process on 127.0.0.1,
a database file with `synchronous=FULL`, the supervisor worker, stand-in agents in a private tmux server), over real
HTTP with keep-alive connections and real tokens. Each iteration:

1. **post** and **post-to-visible**: a reader holds a long-poll (`read_messages` with `wait_ms`) on a thread; the
   writer posts to it. Post latency is the writer's round trip; post-to-visible runs from just before the post is
   sent to the moment the long-poll answer carrying that message is received (one clock, this process).
2. **read**: the reader reads the last 10 messages of that thread (no wait).
3. **message-to-wake** and **message-to-ack**: a coordinator opens a fresh thread (so the trigger storm guard never
   defers a measurement) with a stand-in reviewer (managed, idle, in its tmux pane) and an executioner; the
   executioner posts. From the bridge's own records (one clock): the message's `created_at`, the first `typed`
   trigger attempt (the envelope typed into the pane: wake) and the reviewer's read cursor `updated_at` (the
   stand-in read the thread and acknowledged: ack). Two stand-ins take turns.

Success rates count every `post_message` (steps 1 and 3) and every `read_messages` (steps 1 and 2) the harness
sent: anything but HTTP 200 (or no answer) is a failure. A message never seen by the long-poll, or a wake or ack
that did not happen within the bound, counts as an infinite latency in the percentiles (so it can breach p95) and
is listed under `failed`. The per-agent write quota and the loop guard are switched off on the measured server,
as in `bridge_ops.load`: by design they refuse or block hundreds of back-to-back posts, which would measure the guards
instead of the path; every other setting is the default of bridge/settings.py.

Thresholds (docs/api.md, the pilot targets): post success ≥ 99.0 %, read success ≥ 99.5 %, p95 post-to-visible
≤ 2000 ms, p95 message-to-wake ≤ 3000 ms. `--threshold` adds or overrides one: `<metric>_<p50|p95|p99|max|mean>_ms`
(an upper bound) for post_latency, read_latency, post_to_visible, message_to_wake, message_to_ack, or
`post_success_pct` / `read_success_pct` (a lower bound). `run_sli()` returns the report dict.
"""

from __future__ import annotations

import math
import os
import platform
import queue
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from bridge_ops.report import publish

from bridge.cli.progress import Progress
from bridge.testing.client import Client, Reply, new_thread
from bridge.testing.service import ServiceStack, service_stack
from bridge.testing.stats import percentile

SPEC_THRESHOLDS: dict[str, float] = {
    "post_success_pct": 99.0,
    "read_success_pct": 99.5,
    "post_to_visible_p95_ms": 2000.0,
    "message_to_wake_p95_ms": 3000.0,
}
LATENCIES = ("post_latency", "read_latency", "post_to_visible", "message_to_wake", "message_to_ack")
STATS = ("p50", "p95", "p99", "max", "mean")
_THRESHOLD_NAME = re.compile(rf"^(?:(?:post|read)_success_pct|(?:{'|'.join(LATENCIES)})_(?:{'|'.join(STATS)})_ms)$")
POLL_WAIT_MS = 10_000  # a long-poll answers at once when its message commits; this only bounds a lost one
ARM_DELAY = 0.003  # seconds between sending the long-poll and the post, so the reader is really waiting
WAKE_TIMEOUT = 30.0  # ack timeout 8 s, two retries with backoff: a wake not acked by now has failed
MAX_CONSECUTIVE_FAILURES = 5  # a broken pipeline ends the run early (reported) instead of spinning for hours
STANDINS = ("sli-reviewer-1", "sli-reviewer-2")


def threshold_name_ok(name: str) -> bool:
    """True when `name` is a threshold the harness can compare."""
    return bool(_THRESHOLD_NAME.match(name))


def summarize(values: list[float], failed: int = 0) -> dict[str, Any]:
    """count/failed and p50/p95/p99/max/mean in ms (nearest rank); failures are infinite (reported as null)."""
    ordered = sorted(values) + [math.inf] * failed
    if not ordered:
        return {"count": 0, "failed": 0, **dict.fromkeys(STATS)}

    def finite(v: float) -> float | None:
        return None if math.isinf(v) else round(v, 3)

    return {"count": len(values), "failed": failed, "p50": finite(percentile(ordered, 50)),
            "p95": finite(percentile(ordered, 95)), "p99": finite(percentile(ordered, 99)), "max": finite(ordered[-1]),
            "mean": finite(statistics.fmean(ordered)) if values and not failed else None}


def compare(sli: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """One verdict per threshold: lower bounds for `*_pct`, upper bounds for `*_ms`; a missing value breaches."""
    verdicts = []
    for name, limit in thresholds.items():
        if name.endswith("_pct"):
            value, op = sli[name.removesuffix("_pct")]["pct"], ">="
            ok = value is not None and value >= limit
        else:
            metric, stat = name.removesuffix("_ms").rsplit("_", 1)
            value, op = sli[f"{metric}_ms"][stat], "<="
            ok = value is not None and value <= limit
        verdicts.append({"name": name, "op": op, "limit": limit, "value": value, "ok": ok,
                         "source": "default" if SPEC_THRESHOLDS.get(name) == limit else "override"})
    return verdicts


class _LongPoller:
    """A reader holding one long-poll at a time on its own connection, in its own thread."""

    def __init__(self, stack: ServiceStack, token: str, thread_id: str):
        self.client = stack.client(token, timeout=POLL_WAIT_MS / 1000 + 15)
        self.thread_id = thread_id
        self.asks: queue.Queue[int | None] = queue.Queue()
        self.answers: queue.Queue[tuple[Reply, float]] = queue.Queue()
        self.sending = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sli-long-poll", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (since := self.asks.get()) is not None:
            payload = {"thread_id": self.thread_id, "since_seq": since, "limit": 10, "wait_ms": POLL_WAIT_MS}
            self.sending.set()
            reply = self.client.call("read_messages", payload)
            self.answers.put((reply, time.perf_counter()))

    def close(self) -> None:
        self.asks.put(None)
        self.thread.join(timeout=POLL_WAIT_MS / 1000 + 20)
        self.client.close()


class _Recorder:
    """Counts and latencies of the harness's own calls."""

    def __init__(self) -> None:
        self.calls = {"post": [0, 0], "read": [0, 0]}  # [ok, total]
        self.ms: dict[str, list[float]] = {name: [] for name in LATENCIES}
        self.failed: dict[str, int] = dict.fromkeys(LATENCIES, 0)
        self.errors: list[str] = []

    def call(self, client: Client, kind: str, command: str, payload: dict[str, Any],
             latency: str | None = None) -> dict[str, Any] | None:
        """POST one command, count it under `kind`, time it under `latency`; the body of a 200, else None."""
        reply = client.call(command, payload)
        self.calls[kind][1] += 1
        if not reply.ok:
            self.failed_reply(command, reply)
            if latency:
                self.failed[latency] += 1
            return None
        self.calls[kind][0] += 1
        if latency:
            self.ms[latency].append(reply.ms)
        result: dict[str, Any] = reply.body
        return result

    def failed_reply(self, what: str, reply: Reply) -> None:
        self.error(f"{what} -> {reply.status}: {str(reply.body if reply.status else reply.error)[:200]}")

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    def rate(self, kind: str) -> dict[str, Any]:
        ok, total = self.calls[kind]
        return {"ok": ok, "total": total, "pct": round(100.0 * ok / total, 3) if total else None}


def _wait_for_wake(stack: ServiceStack, thread_id: str, seq: int,
                   agent: str) -> tuple[int, int | None, int | None, str]:
    """(created_at, first typed attempt, cursor time) of a message, waiting (bounded) until `agent` acked it."""
    deadline = time.monotonic() + WAKE_TIMEOUT
    while True:
        created, typed, acked = stack.query(
            "SELECT m.created_at,"
            " (SELECT MIN(a.finished_at) FROM trigger_attempts a WHERE a.thread_id = m.thread_id"
            "  AND a.target_agent_id = :agent AND a.outcome = 'typed'),"
            " (SELECT r.updated_at FROM read_cursors r WHERE r.thread_id = m.thread_id AND r.agent_id = :agent"
            "  AND r.last_read_seq >= m.seq)"
            " FROM messages m WHERE m.thread_id = :thread AND m.seq = :seq",
            {"agent": agent, "thread": thread_id, "seq": seq})[0]
        if (typed is not None and acked is not None) or time.monotonic() > deadline:
            jobs = stack.query("SELECT status FROM trigger_jobs WHERE thread_id = ? AND target_agent_id = ?",
                               (thread_id, agent))
            return created, typed, acked, ",".join(status for (status,) in jobs) or "none"
        time.sleep(0.002)


def _measure_visible(poller: _LongPoller, writer: Client, rec: _Recorder, thread_id: str, i: int,
                     last_seq: int) -> int:
    """Post while the reader long-polls; record post latency and post-to-visible; return the new `since_seq`."""
    poller.sending.clear()
    poller.asks.put(last_seq)
    poller.sending.wait(5)
    time.sleep(ARM_DELAY)
    sent = time.perf_counter()
    posted = rec.call(writer, "post", "post_message", {
        "thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": f"sli message #{i}",
        "idempotency_key": f"sli-{i}"}, latency="post_latency")
    answer, seen = poller.answers.get(timeout=POLL_WAIT_MS / 1000 + 20)
    rec.calls["read"][1] += 1
    if answer.ok:
        rec.calls["read"][0] += 1
    else:
        rec.failed_reply("long-poll read_messages", answer)
    got = [m["seq"] for m in answer.body["messages"]] if answer.ok else []
    if posted is not None and posted["seq"] in got:
        rec.ms["post_to_visible"].append((seen - sent) * 1000)
        return int(posted["seq"])
    rec.failed["post_to_visible"] += 1
    return max([last_seq, *got])


def _measure_wake(stack: ServiceStack, coord: Client, executioner: Client, rec: _Recorder, agent: str,
                  i: int) -> None:
    """A fresh thread, a post addressed (broadcast) to an idle stand-in; record message-to-wake and -to-ack."""
    thread_id = _create(coord, rec, agent, i)
    message = thread_id and rec.call(executioner, "post", "post_message", {
        "thread_id": thread_id, "schema_version": 1, "kind": "chat", "body": f"please re-review #{i}",
        "idempotency_key": f"sli-wake-{i}"}, latency="post_latency")
    if not message:
        rec.failed["message_to_wake"] += 1
        rec.failed["message_to_ack"] += 1
        return
    created, typed, acked, jobs = _wait_for_wake(stack, thread_id, message["seq"], agent)
    for name, stamp in (("message_to_wake", typed), ("message_to_ack", acked)):
        if stamp is None:
            rec.failed[name] += 1
            rec.error(f"{name}: iteration {i} ({agent}, {thread_id}): nothing within {WAKE_TIMEOUT:g} s "
                      f"(jobs: {jobs})")
        else:
            rec.ms[name].append(float(stamp - created))


def run_sli(iterations: int = 100, *, thresholds: Mapping[str, float] | None = None, workdir: Path | None = None,
            on_progress: Callable[[int], None] | None = None, db: str = "bridge.db") -> dict[str, Any]:
    """Start the stack on `db` (a SQLite file in the workdir, or a PostgreSQL URL), measure `iterations` rounds,
    stop the stack; return the report (latencies in ms)."""
    from bridge_ops.load import SERVER_ENV

    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    limits = {**SPEC_THRESHOLDS, **(thresholds or {})}
    bad = [name for name in limits if not threshold_name_ok(name)]
    if bad:
        raise ValueError(f"unknown threshold(s): {', '.join(bad)}")
    started, load_before = time.time(), os.getloadavg()
    rec = _Recorder()
    completed, aborted = 0, None
    with service_stack(workdir, env=SERVER_ENV, db=db) as stack:
        for agent in STANDINS:
            stack.launch_standin(agent)
        coord = stack.client(stack.token("sli-coordinator", "coordinator"))
        writer = stack.client(stack.token("sli-writer"))
        reader = stack.client(stack.token("sli-reader"))
        executioner = stack.client(stack.token("sli-executioner"))
        poller = None
        try:
            visible = new_thread(coord, ["sli-writer", "sli-reader"], "sli: post-to-visible", type="conversation")
            poller = _LongPoller(stack, stack.token("sli-reader"), visible)
            last_seq, consecutive = 0, 0
            for i in range(iterations):
                failures_before = sum(rec.failed.values())
                last_seq = _measure_visible(poller, writer, rec, visible, i, last_seq)
                rec.call(reader, "read", "read_messages", {"thread_id": visible,
                                                           "since_seq": max(0, last_seq - 10), "limit": 50},
                         latency="read_latency")
                _measure_wake(stack, coord, executioner, rec, STANDINS[i % len(STANDINS)], i)
                completed = i + 1
                if on_progress is not None:
                    on_progress(1)
                consecutive = consecutive + 1 if sum(rec.failed.values()) > failures_before else 0
                if consecutive >= MAX_CONSECUTIVE_FAILURES:
                    aborted = f"stopped after {consecutive} consecutive failed iterations"
                    break
            last = STANDINS[(completed - 1) % len(STANDINS)]
            trigger = stack.query("SELECT trigger_id FROM trigger_jobs WHERE target_agent_id = ?"
                                  " ORDER BY created_at DESC LIMIT 1", (last,))
            in_pane = bool(trigger) and stack.tmux.wait_for_text(
                stack.panes[last], f"STANDIN ACKED trigger={trigger[0][0]}", timeout=5)
            job_states = _final_job_states(stack)
            environment = stack.describe()
            environment["worker_heartbeat_age_s"] = _health(stack).get("worker", {}).get("last_tick_age_seconds")
        finally:
            if poller is not None:
                poller.close()
            for client in (coord, writer, reader, executioner):
                client.close()
    sli = {"post_success": rec.rate("post"), "read_success": rec.rate("read"),
           **{f"{name}_ms": summarize(rec.ms[name], rec.failed[name]) for name in LATENCIES}}
    verdicts = compare(sli, limits)
    verdicts.append({"name": "iterations_completed", "op": ">=", "limit": iterations, "value": completed,
                     "ok": completed >= iterations, "source": "harness"})
    verdicts.append({"name": "last_envelope_acked_in_pane", "op": "==", "limit": True, "value": in_pane,
                     "ok": in_pane, "source": "harness"})
    return {
        "iterations": iterations, "completed": completed, "aborted": aborted,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 2),
        "stack": {**environment, "kind": "real: bridge serve subprocess + worker + tmux stand-ins over 127.0.0.1"},
        "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "sli": sli, "wake_jobs": job_states, "last_envelope_acked_in_pane": in_pane,
        "thresholds": verdicts, "breaches": [v["name"] for v in verdicts if not v["ok"]],
        "ok": all(v["ok"] for v in verdicts), "errors": rec.errors,
    }


def _create(coord: Client, rec: _Recorder, agent: str, i: int) -> str | None:
    """A fresh wake thread (not an SLI call: a failure shows as a failed wake)."""
    try:
        return new_thread(coord, [agent, "sli-executioner"], f"sli: wake #{i}")
    except RuntimeError as exc:
        rec.error(f"create_thread: {exc}")
        return None


def _final_job_states(stack: ServiceStack, timeout: float = 15.0) -> dict[str, int]:
    """Trigger jobs of the stand-ins by status, once none is still in flight (the worker confirms an ack on its
    next check, a moment after the stand-in's cursor moved)."""
    deadline = time.monotonic() + timeout
    while True:
        states = dict(stack.query("SELECT status, COUNT(*) FROM trigger_jobs WHERE target_agent_id IN (?, ?)"
                                  " GROUP BY status", STANDINS))
        if not {"queued", "awaiting_ack"} & set(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.05)


def _health(stack: ServiceStack) -> dict[str, Any]:
    with stack.client() as client:
        reply = client.get("/health")
    return reply.body if reply.ok else {}


# ------------------------------------------------------------------------------------------------ rendering
def _cell(value: Any, width: int) -> str:
    return f"{'-' if value is None else str(value):>{width}}"


def format_report(report: dict[str, Any]) -> str:
    """The measurements and the verdicts as plain text."""
    lines = [f"SLI over {report['completed']}/{report['iterations']} iterations in {report['duration_s']} s "
             f"({report['stack']['url']}, server pid {report['stack']['server_pid']}, "
             f"{report['stack']['engine']} {report['stack']['db']}, synchronous={report['stack']['synchronous']}"
             + (f", journal={report['stack']['journal_mode']}" if "journal_mode" in report["stack"] else "") + ")", ""]
    header = f"{'measure':<18}{'n':>6}{'failed':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    lines += [header, "-" * len(header)]
    for name in LATENCIES:
        row = report["sli"][f"{name}_ms"]
        lines.append(f"{name.replace('_', ' '):<18}{row['count']:>6}{row['failed']:>8}" + "".join(
            _cell(row[s], 10) for s in ("p50", "p95", "p99", "max")))
    for name in ("post_success", "read_success"):
        row = report["sli"][name]
        lines.append(f"{name.replace('_', ' '):<18}{row['ok']:>6}/{row['total']:<7} = {row['pct']} %")
    lines += ["", f"wake jobs: {report['wake_jobs']}; last envelope acked in its pane: "
                  f"{report['last_envelope_acked_in_pane']}"]
    lines.append("")
    for v in report["thresholds"]:
        lines.append(f"{'PASS' if v['ok'] else 'BREACH':<7}{v['name']:<30}{_cell(v['value'], 10)} {v['op']} "
                     f"{v['limit']}  ({v['source']})")
    if report["aborted"]:
        lines.append(f"ABORTED: {report['aborted']}")
    for error in report["errors"][:5]:
        lines.append(f"error: {error}")
    lines.append(f"\nverdict: {'OK' if report['ok'] else 'BREACH: ' + ', '.join(report['breaches'])}")
    return "\n".join(lines)


def parse_thresholds(values: tuple[str, ...]) -> dict[str, float]:
    """`NAME=VALUE` pairs into a dict; a bad one is a usage error."""
    out: dict[str, float] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not threshold_name_ok(name):
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE with NAME one of post_success_pct, "
                                     f"read_success_pct, <{'|'.join(LATENCIES)}>_<{'|'.join(STATS)}>_ms",
                                     param_hint="--threshold")
        try:
            out[name] = float(raw)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: {raw!r} is not a number", param_hint="--threshold") from exc
    return out


@click.command("sli")
@click.option("--iterations", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Rounds of post + long-poll + read + wake.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the JSON report to this file.")
@click.option("--threshold", "threshold_args", multiple=True, metavar="NAME=VALUE",
              help="Add or override a threshold, e.g. message_to_wake_p99_ms=500 (repeatable).")
@click.option("--db", default="bridge.db", show_default=True,
              help="The database: a SQLite file in the run's temporary directory, or a PostgreSQL URL (an empty "
                   "database is best: the run adds threads).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def sli(iterations: int, out: str | None, threshold_args: tuple[str, ...], db: str, as_json: bool) -> None:
    """Measure the service levels (docs/api.md) on the real stack (bridge serve, FULL, worker, tmux stand-ins).

    Exit 0 when every threshold holds, 1 on a breach, 2 on a usage error, 4 when the stack could not start.
    """
    thresholds = parse_thresholds(threshold_args)
    with Progress(1, as_json=as_json).bar(iterations, "sli iterations") as update:
        try:
            report = run_sli(iterations, thresholds=thresholds, on_progress=update, db=db)
        except RuntimeError as exc:  # the stack could not start (tmux missing, server refused to start)
            click.echo(f"error: the stack is unavailable: {exc}", err=True)
            sys.exit(4)
    publish(report, format_report(report), as_json=as_json, out=out)
    sys.exit(0 if report["ok"] else 1)
