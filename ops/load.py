"""Closed-loop HTTP load against a real bridge: req/s and p50/p95/p99 of post/read next to the /health ceiling.

    python -m bridge_ops.load [--clients 1,8] [--seconds 5] [--repeat 1] [--mode processes|threads]
                       [--server subprocess|inprocess] [--threads N] [--serve-arg=--no-worker] [--out report.json]

The bridge runs on 127.0.0.1 (port 0) with its own temporary database and `synchronous=FULL`, by default as a
`bridge serve` subprocess (so the load generator does not share its GIL), stopped by PID at the end. Every client
holds one keep-alive HTTP/1.1 connection and sends requests back to back (closed loop) until the time or request
budget is spent. For each concurrency level three scenarios run in turn: `health` (GET /health, the HTTP ceiling
of this server on this machine right now), `post` (post_message with an idempotency key) and `read`
(read_messages returning 10 messages). Because the machine may be shared and noisy, the figures that matter are
the ratios measured within the same run (post req/s as % of health req/s); `--repeat` runs every level several
times and reports medians. Server CPU per request (from /proc) and client CPU per request are reported too: they
are less sensitive to noise than req/s and show where a change helps.

The per-agent write quota and the loop guard are switched off on the benchmark server (they would otherwise
refuse or block a load test by design); everything else is the default configuration, including the supervisor
worker that `bridge serve` runs in the same process (`--serve-arg=--no-worker` measures the API alone).
`run_load(LoadConfig(...))` returns the report dict for reuse.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.domain.location import parse
from bridge.testing.client import Client, new_thread, post
from bridge.testing.inprocess import waitress_thread
from bridge.testing.processes import cpu_seconds
from bridge.testing.stack import Stack
from bridge.testing.stats import percentile
from bridge.testing.tokens import Minter

if TYPE_CHECKING:
    pass

SCENARIOS = ("health", "post", "read")
READ_SEED = 100  # messages in the read thread
READ_SINCE = 90  # each read returns the last 10 of them
BODY = "benchmark message: " + "lorem ipsum dolor sit amet " * 6
TARGETS = {"p50_ms_1": 1.0, "p95_ms_1": 2.0, "health_ratio_8": 0.60, "p99_ms_8": 25.0}
SERVER_ENV = {"BRIDGE_WRITE_QUOTA_PER_MIN": "0", "BRIDGE_LOOP_GUARD_TURNS": "0", "BRIDGE_SYNCHRONOUS": "FULL"}


# --------------------------------------------------------------------------------------------------- the server
@dataclass
class Server:
    """A running bridge: where it listens, its database, its process (None: this one)."""

    port: int
    db: Path | str  # the SQLite file or the PostgreSQL URL
    pid: int | None


def _server_settings(threads: int | None) -> dict[str, str]:
    return {**SERVER_ENV, "BRIDGE_LOG_LEVEL": "WARNING",
            **({"BRIDGE_THREADS": str(threads)} if threads is not None else {})}


@contextlib.contextmanager
def subprocess_server(workdir: Path, threads: int | None = None, serve_args: tuple[str, ...] = (),
                      db: str = "bridge.db") -> Iterator[Server]:
    """`bridge serve` (with its worker unless `serve_args` says --no-worker) on 127.0.0.1, port 0, on `db`, as a
    child process of a harness `Stack` with the default timings; stopped by PID on exit."""
    with Stack(workdir, env=_server_settings(threads), timings={}, tmux_prefix="bridge-load", db=db) as stack:
        proc = stack.serve("server", *serve_args, worker=True)
        yield Server(port=proc.port, db=stack.db, pid=proc.pid)


@contextlib.contextmanager
def inprocess_server(workdir: Path, threads: int | None = None, db: str = "bridge.db") -> Iterator[Server]:
    """The same server under waitress in a thread of this process (shares the GIL with thread clients)."""
    from bridge.settings import Settings
    from bridge.wiring import build

    location = db if "://" in db else str(workdir / db)
    settings = Settings.load({"db": location}, env=_server_settings(threads))
    parts = build(settings)
    try:
        with waitress_thread(parts) as port:
            yield Server(port=port, db=location, pid=None)
    finally:
        parts.close()


# --------------------------------------------------------------------------------------------------- the clients
@dataclass
class ClientSpec:
    """What one load client does (picklable: it crosses into spawned processes)."""

    port: int
    scenario: str
    token: str
    thread_id: str
    read_thread_id: str
    seconds: float
    max_requests: int
    warmup: int
    tag: str


@dataclass
class ClientResult:
    requests: int = 0
    errors: int = 0
    started: float = 0.0
    finished: float = 0.0
    latencies: bytes = b""  # array('d') of milliseconds
    cpu: float = 0.0  # CPU seconds this client spent in the measured window
    first_error: str | None = None


def _request_factory(spec: ClientSpec, client: Client) -> Any:
    """`send(n)` for the scenario: one request on the lean path, (status, headers, body bytes)."""
    auth = {"Authorization": f"Bearer {spec.token}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    if spec.scenario == "health":
        return lambda n: client.raw("GET", "/health", None, auth)
    if spec.scenario == "post":
        def post_one(n: int) -> tuple[int, dict[str, str], bytes]:
            payload = {"thread_id": spec.thread_id, "schema_version": 1, "kind": "chat", "body": BODY,
                       "idempotency_key": f"{spec.tag}-{n}"}
            return client.raw("POST", "/v1/mcp/post_message", json.dumps(payload).encode(), json_auth)
        return post_one
    if spec.scenario == "read":
        body = json.dumps({"thread_id": spec.read_thread_id, "since_seq": READ_SINCE, "limit": 50}).encode()
        return lambda n: client.raw("POST", "/v1/mcp/read_messages", body, json_auth)
    raise ValueError(f"unknown scenario {spec.scenario!r}")


def run_client(spec: ClientSpec, barrier: Any, results: Any) -> None:
    """Warm up, wait for every client, then send requests back to back until time or count runs out."""
    result = ClientResult()
    client = Client(spec.port)
    try:
        send = _request_factory(spec, client)
        for n in range(spec.warmup):
            send(-1 - n)
        barrier.wait(timeout=120)
        latencies = array("d")
        clock = time.perf_counter
        result.started = time.monotonic()
        cpu_started = time.thread_time()
        stop_at = clock() + spec.seconds
        n = 0
        while n < spec.max_requests:
            begin = clock()
            if begin >= stop_at:
                break
            try:
                status, _, raw = send(n)
            except (OSError, http.client.HTTPException) as exc:
                status, raw = -1, repr(exc).encode()
            latencies.append((clock() - begin) * 1000.0)
            n += 1
            if status != 200:
                result.errors += 1
                result.first_error = result.first_error or f"{status}: {raw[:200]!r}"
        result.finished = time.monotonic()
        result.cpu = time.thread_time() - cpu_started
        result.requests = n
        result.latencies = latencies.tobytes()
    except Exception as exc:  # reported, never swallowed: the parent fails the run
        result.first_error = f"client crashed: {exc!r}"
        with contextlib.suppress(Exception):
            barrier.abort()
    finally:
        client.close()
        results.put(result)


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by a server (with every serving process it forked) via /proc
    (Linux); this process's own when `pid` is None."""
    return time.process_time() if pid is None else cpu_seconds(pid)


def _run_level(specs: list[ClientSpec], mode: str, server_pid: int | None) -> tuple[list[ClientResult], float | None]:
    """Run one scenario at one concurrency level; the results and the server's CPU seconds in the window."""
    n = len(specs)
    if mode == "threads":
        barrier: Any = threading.Barrier(n + 1)
        results: Any = queue.Queue()
        workers: list[Any] = [threading.Thread(target=run_client, args=(s, barrier, results), daemon=True)
                              for s in specs]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(n + 1), ctx.Queue()
        workers = [ctx.Process(target=run_client, args=(s, barrier, results), daemon=True) for s in specs]
    for w in workers:
        w.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=180)
    cpu_before = process_cpu(server_pid)
    budget = max(s.seconds for s in specs) + 180
    collected = [results.get(timeout=budget) for _ in workers]  # drain before join (large payloads)
    cpu_after = process_cpu(server_pid)
    for w in workers:
        w.join(timeout=30)
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    if server_cpu is not None and server_pid is None and mode == "threads":
        server_cpu -= sum(r.cpu for r in collected)  # in-process server: this process minus its client threads
    return collected, server_cpu


@dataclass
class Measurement:
    scenario: str
    clients: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us: float | None = None  # server CPU per request (microseconds)
    server_cores: float | None = None  # server CPU seconds per second of the window
    client_cpu_us: float | None = None  # client CPU per request (microseconds)
    first_error: str | None = None


def _summarise(scenario: str, clients: int, results: list[ClientResult], server_cpu: float | None) -> Measurement:
    errors = [r.first_error for r in results if r.first_error]
    if any(e.startswith("client crashed") for e in errors):
        raise RuntimeError(f"{scenario} x{clients}: {errors[0]}")
    latencies: list[float] = []
    for r in results:
        chunk = array("d")
        chunk.frombytes(r.latencies)
        latencies.extend(chunk)
    latencies.sort()
    total = sum(r.requests for r in results)
    window = max(r.finished for r in results) - min(r.started for r in results)
    return Measurement(
        scenario=scenario, clients=clients, requests=total, errors=sum(r.errors for r in results),
        seconds=round(window, 3), rps=round(total / window, 1) if window > 0 else 0.0,
        p50_ms=round(percentile(latencies, 50), 3), p95_ms=round(percentile(latencies, 95), 3),
        p99_ms=round(percentile(latencies, 99), 3), max_ms=round(latencies[-1], 3) if latencies else math.nan,
        server_cpu_us=None if server_cpu is None or not total else round(server_cpu / total * 1e6, 1),
        server_cores=None if server_cpu is None or window <= 0 else round(server_cpu / window, 2),
        client_cpu_us=round(sum(r.cpu for r in results) / total * 1e6, 1) if total else None,
        first_error=errors[0] if errors else None)


# --------------------------------------------------------------------------------------------------- the run
@dataclass
class LoadConfig:
    clients: list[int] = field(default_factory=lambda: [1, 8])
    seconds: float = 5.0
    max_requests: int = 200_000  # per client and scenario
    warmup: int = 50  # requests per client before the clock starts
    repeat: int = 1
    mode: str = "processes"  # client processes or threads
    server: str = "subprocess"  # "subprocess" or "inprocess"
    threads: int | None = None  # waitress threads (default: the bridge's default)
    serve_args: tuple[str, ...] = ()  # extra `bridge serve` arguments (subprocess server only), e.g. --no-worker
    scenarios: tuple[str, ...] = SCENARIOS
    db: str = "bridge.db"  # a SQLite file in the run's temporary directory, or a PostgreSQL URL


def commit_latency(directory: Path, commits: int = 200) -> dict[str, float]:
    """p50/p95 of a one-row FULL commit in `directory`: the disk's fsync floor under a post, right now."""
    import apsw

    conn = apsw.Connection(str(directory / "probe.db"))
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
        timings = []
        for _ in range(commits):
            begin = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (BODY,))
            conn.execute("COMMIT")
            timings.append((time.perf_counter() - begin) * 1000.0)
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            (directory / f"probe.db{suffix}").unlink()
    timings.sort()
    return {"p50_ms": round(percentile(timings, 50), 3), "p95_ms": round(percentile(timings, 95), 3)}


def _prepare(server: Server, agents: list[str]) -> tuple[dict[str, str], str, str]:
    """Tokens signed with the server's key, a thread to post into and a seeded thread to read from."""
    minter = Minter.for_db(server.db)
    tokens = {agent: minter(agent, session_id=f"{agent}-bench") for agent in agents}
    with Client(server.port, minter("bench-coordinator", "coordinator", session_id="bench-coordinator-bench")) as admin:
        post_thread, read_thread = (new_thread(admin, agents, title, type="conversation")
                                    for title in ("load: post", "load: read"))
    with Client(server.port, tokens[agents[0]]) as seeder:
        for n in range(READ_SEED):
            post(seeder, read_thread, f"{BODY} #{n}")
    return tokens, post_thread, read_thread


def run_load(config: LoadConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Start a bridge, run every scenario at every concurrency level, stop the bridge; return the report dict."""
    config = config or LoadConfig()
    for name, value in overrides.items():
        setattr(config, name, value)
    if any(c < 1 for c in config.clients):
        raise ValueError("client counts must be positive")
    agents = [f"bench-agent-{i:02d}" for i in range(min(20, max(config.clients)))]
    runs: list[Measurement] = []
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bridge-load-") as tmp:
        fsync_before = commit_latency(Path(tmp))
        if config.server == "subprocess":
            opened = subprocess_server(Path(tmp), config.threads, serve_args=tuple(config.serve_args), db=config.db)
        else:
            opened = inprocess_server(Path(tmp), config.threads, db=config.db)
        with opened as server:
            tokens, post_thread, read_thread = _prepare(server, agents)
            for round_no in range(config.repeat):
                for clients in config.clients:
                    for scenario in config.scenarios:
                        specs = [ClientSpec(port=server.port, scenario=scenario,
                                            token=tokens[agents[i % len(agents)]], thread_id=post_thread,
                                            read_thread_id=read_thread, seconds=config.seconds,
                                            max_requests=config.max_requests, warmup=config.warmup,
                                            tag=f"r{round_no}c{clients}i{i}") for i in range(clients)]
                        results, server_cpu = _run_level(specs, config.mode, server.pid)
                        runs.append(_summarise(scenario, clients, results, server_cpu))
        fsync_after = commit_latency(Path(tmp))
    report = {
        "config": {**asdict(config), "scenarios": list(config.scenarios), "serve_args": list(config.serve_args)},
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                        "synchronous": "FULL", "server_env": SERVER_ENV, "store": parse(config.db).engine,
                        "full_commit_before": fsync_before, "full_commit_after": fsync_after},
        "runs": [asdict(r) for r in runs],
    }
    report["results"] = _medians(runs)
    report["targets"] = _check_targets(report["results"])
    return report


def _medians(runs: list[Measurement]) -> list[dict[str, Any]]:
    """One row per (scenario, clients): medians over the repeats; `vs_health` = median of per-round ratios."""
    rows: list[dict[str, Any]] = []
    keys = sorted({(r.clients, SCENARIOS.index(r.scenario) if r.scenario in SCENARIOS else 99, r.scenario)
                   for r in runs})
    for clients, _, scenario in keys:
        same = [r for r in runs if r.scenario == scenario and r.clients == clients]
        health = [r for r in runs if r.scenario == "health" and r.clients == clients]
        row: dict[str, Any] = {"scenario": scenario, "clients": clients, "rounds": len(same),
                               "requests": sum(r.requests for r in same), "errors": sum(r.errors for r in same)}
        for name in ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu_us", "server_cores",
                     "client_cpu_us"):
            values = [getattr(r, name) for r in same if getattr(r, name) is not None]
            row[name] = round(statistics.median(values), 3) if values else None
        if health and len(health) == len(same):
            row["vs_health"] = round(statistics.median(r.rps / h.rps for r, h in zip(same, health, strict=True)
                                                       if h.rps), 3)
        row["first_error"] = next((r.first_error for r in same if r.first_error), None)
        rows.append(row)
    return rows


def _check_targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, for post and read: 1 client p50/p95; 8 clients share of /health req/s and p99."""
    verdicts: dict[str, Any] = {}
    for row in results:
        if row["scenario"] == "health":
            continue
        name = f"{row['scenario']}@{row['clients']}"
        if row["clients"] == 1:
            verdicts[name] = {"p50_ms": row["p50_ms"], "p50_ok": row["p50_ms"] <= TARGETS["p50_ms_1"],
                              "p95_ms": row["p95_ms"], "p95_ok": row["p95_ms"] <= TARGETS["p95_ms_1"]}
        elif row["clients"] == 8:
            ratio = row.get("vs_health")
            verdicts[name] = {"vs_health": ratio, "vs_health_ok": ratio is not None and ratio >= TARGETS[
                "health_ratio_8"], "p99_ms": row["p99_ms"], "p99_ok": row["p99_ms"] <= TARGETS["p99_ms_8"]}
        else:
            continue
        verdicts[name]["ok"] = all(v for k, v in verdicts[name].items() if k.endswith("_ok"))
    return verdicts


def _opt(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    header = f"{'scenario':<8} {'clients':>7} {'requests':>9} {'errors':>6} {'req/s':>9} {'p50 ms':>8} " \
             f"{'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'% health':>9} {'srv us/req':>10} {'srv cores':>9} " \
             f"{'cli us/req':>10}"
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        share = f"{row['vs_health'] * 100:.0f} %" if row.get("vs_health") is not None and \
            row["scenario"] != "health" else ""
        lines.append(f"{row['scenario']:<8} {row['clients']:>7} {row['requests']:>9} {row['errors']:>6} "
                     f"{row['rps']:>9.0f} {row['p50_ms']:>8.3f} {row['p95_ms']:>8.3f} {row['p99_ms']:>8.3f} "
                     f"{row['max_ms']:>8.2f} {share:>9} {_opt(row['server_cpu_us'], 10, 0)} "
                     f"{_opt(row['server_cores'], 9, 2)} {_opt(row['client_cpu_us'], 10, 0)}")
    env = report["environment"]
    lines.append(f"FULL commit of one row (disk floor) before/after: p50 {env['full_commit_before']['p50_ms']}/"
                 f"{env['full_commit_after']['p50_ms']} ms, p95 {env['full_commit_before']['p95_ms']}/"
                 f"{env['full_commit_after']['p95_ms']} ms; load average before/after "
                 f"{env['loadavg_before'][0]:.1f}/{env['loadavg_after'][0]:.1f} on {env['cpus']} CPUs")
    for name, verdict in report["targets"].items():
        lines.append(f"target {name}: {'PASS' if verdict['ok'] else 'MISS'} "
                     + ", ".join(f"{k}={v}" for k, v in verdict.items() if not k.endswith("ok")))
    for row in report["results"]:
        if row.get("first_error"):
            lines.append(f"first error in {row['scenario']}@{row['clients']}: {row['first_error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_ops.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8", help="comma-separated concurrency levels [1,8]")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each scenario and level [5]")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per client and scenario [200000]")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests per client first [50]")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the report gives medians [1]")
    parser.add_argument("--mode", choices=("processes", "threads"), default="processes",
                        help="load clients as processes (default) or threads of this process")
    parser.add_argument("--server", choices=("subprocess", "inprocess"), default="subprocess",
                        help="run `bridge serve` as a child process (default) or waitress in this process")
    parser.add_argument("--threads", type=int, default=None, help="waitress threads of the server")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="subset of health,post,read")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `bridge serve` (repeatable), e.g. --serve-arg=--no-worker")
    parser.add_argument("--db", default="bridge.db",
                        help="the database: a SQLite file in the run's temporary directory [bridge.db], or a "
                             "PostgreSQL URL (an empty database is best: the run adds threads)")
    parser.add_argument("--out", default=None, help="write the JSON report to this file")
    args = parser.parse_args(argv)
    try:
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error("--clients must be comma-separated integers")
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    if not clients or any(c < 1 or c > 64 for c in clients):
        parser.error("--clients must be integers in 1..64")
    if not scenarios or set(scenarios) - set(SCENARIOS):
        parser.error("--scenarios must be a subset of health,post,read")
    if args.seconds <= 0 or args.seconds > 600 or args.repeat < 1 or args.max_requests < 1 or args.warmup < 0:
        parser.error("--seconds must be in (0, 600], --repeat and --max-requests at least 1, --warmup >= 0")
    config = LoadConfig(clients=clients, seconds=args.seconds, max_requests=args.max_requests, warmup=args.warmup,
                        repeat=args.repeat, mode=args.mode, server=args.server, threads=args.threads,
                        scenarios=scenarios, serve_args=tuple(args.serve_arg), db=args.db)
    report = run_load(config)
    print(format_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
