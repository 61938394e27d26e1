"""Start-up of the `bridge` command line, timed as whole processes of the console script, as a person runs it.

    python -m pytest benchmarks/test_bench_cli.py --benchmark-only -s

Each benchmark runs its command ROUNDS times after one warm-up run; the median wall time of those processes is in
`extra_info`, printed, and checked against the target: `bridge --version` and `bridge --help` <= 150 ms,
`bridge token issue` (on an existing database) <= 300 ms. To see what a slow start imports:
`python -X importtime -m bridge <command> 2>&1 | sort -t'|' -k2 -n | tail`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROUNDS = 10
BRIDGE = Path(sys.executable).with_name("bridge")  # the console script installed next to this interpreter


@pytest.fixture
def database(tmp_path) -> Path:
    """A migrated database (and its signing key) in tmp_path."""
    path = tmp_path / "bridge.db"
    subprocess.run([str(BRIDGE), "db", "migrate", "--db", str(path)], check=True, capture_output=True, timeout=60)
    return path


def run_timed(benchmark, args: list[str], target_ms: float, cwd: Path) -> None:
    """Time `bridge <args>` ROUNDS times as separate processes; the median must meet `target_ms`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    samples: list[float] = []

    def once() -> None:
        started = time.perf_counter()
        done = subprocess.run([str(BRIDGE), *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env,
                              check=False)
        samples.append((time.perf_counter() - started) * 1000)
        assert done.returncode == 0, done.stderr

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    measured = samples[-ROUNDS:]
    median = statistics.median(measured)
    benchmark.extra_info.update({"command": " ".join(["bridge", *args[:2]]), "processes": len(measured),
                                 "median_ms": round(median, 1), "target_ms": target_ms})
    print(f"bridge {' '.join(args[:2])}: median {median:.0f} ms of {len(measured)} processes "
          f"(target <= {target_ms:g} ms)")
    assert median <= target_ms, f"median {median:.0f} ms > {target_ms:g} ms"


def test_version(benchmark, tmp_path):
    run_timed(benchmark, ["--version"], 150, tmp_path)


def test_help(benchmark, tmp_path):
    run_timed(benchmark, ["--help"], 150, tmp_path)


def test_token_issue(benchmark, tmp_path, database):
    run_timed(benchmark, ["token", "issue", "--agent-id", "bench-agent", "--role", "participant", "--db",
                          str(database)], 300, tmp_path)
