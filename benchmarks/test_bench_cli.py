"""Start-up of the `bridge` command line, timed as whole processes of the console script, as a person runs it.

    python -m pytest benchmarks/test_bench_cli.py --benchmark-only -s

Each benchmark runs its command ROUNDS times after one warm-up run; the median wall time of those processes is in
`extra_info`, printed, and checked against the target: `bridge --version` and `bridge --help` <= 150 ms,
`bridge token issue` (on an existing database) <= 300 ms. Beside it: the median CPU time of the same processes
(which other load on the machine moves much less than wall time) and the median wall time of ROUNDS bare
`python -c pass` run right after (the interpreter's own start, the floor). To see what a slow start imports:
`python -X importtime -m bridge <command> 2>&1 | sort -t'|' -k2 -n | tail`.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.testing.processes import clean_env

ROUNDS = 10
BRIDGE = Path(sys.executable).with_name("bridge")  # the console script installed next to this interpreter


@pytest.fixture
def database(tmp_path) -> Path:
    """A migrated database (and its signing key) in tmp_path."""
    path = tmp_path / "bridge.db"
    subprocess.run([str(BRIDGE), "db", "migrate", "--db", str(path)], check=True, capture_output=True, timeout=60)
    return path


def process_ms(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run one process to its end: (wall ms, CPU ms of the child, user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    return wall, (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000


def run_timed(benchmark, args: list[str], target_ms: float, cwd: Path) -> None:
    """Time `bridge <args>` ROUNDS times as separate processes; the median must meet `target_ms`."""
    env = clean_env()
    wall: list[float] = []
    cpu: list[float] = []

    def once() -> None:
        wall_ms, cpu_ms = process_ms([str(BRIDGE), *args], cwd, env)
        wall.append(wall_ms)
        cpu.append(cpu_ms)

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    floor = [process_ms([sys.executable, "-c", "pass"], cwd, env)[0] for _ in range(ROUNDS)]
    median, cpu_median, floor_median = (statistics.median(s[-ROUNDS:]) for s in (wall, cpu, floor))
    benchmark.extra_info.update({"command": " ".join(["bridge", *args[:2]]), "processes": len(wall[-ROUNDS:]),
                                 "median_ms": round(median, 1), "target_ms": target_ms,
                                 "median_cpu_ms": round(cpu_median, 1),
                                 "python_start_median_ms": round(floor_median, 1),
                                 "load_average": os.getloadavg()[0]})
    print(f"bridge {' '.join(args[:2])}: median {median:.0f} ms wall, {cpu_median:.0f} ms CPU of "
          f"{len(wall[-ROUNDS:])} processes (target <= {target_ms:g} ms; bare python {floor_median:.0f} ms; "
          f"load {os.getloadavg()[0]:.1f})")
    assert median <= target_ms, f"median {median:.0f} ms > {target_ms:g} ms"


def test_version(benchmark, tmp_path):
    run_timed(benchmark, ["--version"], 150, tmp_path)


def test_help(benchmark, tmp_path):
    run_timed(benchmark, ["--help"], 150, tmp_path)


def test_token_issue(benchmark, tmp_path, database):
    run_timed(benchmark, ["token", "issue", "--agent-id", "bench-agent", "--role", "participant", "--db",
                          str(database)], 300, tmp_path)
