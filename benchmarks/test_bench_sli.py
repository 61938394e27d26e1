"""The SLIs (docs/api.md) on the real stack: `bridge serve` as a child process (FULL, worker), stand-ins in tmux.

    python -m pytest benchmarks/test_bench_sli.py --benchmark-only -s

What this adds to `test_bench_messages.py` (one call at a time against a server in the test process, no worker)
and `test_bench_wake.py` (wake and ack with the server and worker in the test process): the server is a separate
process as deployed, and the same run measures post/read success rates, post and read latency, post-to-visible
through a long-polling reader, message-to-wake and message-to-ack, compared with the thresholds of docs/api.md
(`bridge_ops.sli.run_sli`, the harness behind `bridge ops sli`). pytest-benchmark times the whole run; the per-message
percentiles are in `extra_info` and printed.
"""

from __future__ import annotations

import json

from bridge_ops.sli import run_sli

ITERATIONS = 100


def test_sli_on_the_real_stack(benchmark, tmp_path):
    report = benchmark.pedantic(run_sli, kwargs={"iterations": ITERATIONS, "workdir": tmp_path / "stack"},
                                rounds=1, iterations=1)
    benchmark.extra_info.update({"sli": report["sli"], "thresholds": report["thresholds"],
                                 "wake_jobs": report["wake_jobs"], "stack": report["stack"]})
    print(json.dumps({k: report[k] for k in ("sli", "thresholds", "wake_jobs")}, indent=2))
    assert report["completed"] == ITERATIONS
    assert report["stack"]["synchronous"] == "FULL" and report["stack"]["journal_mode"] == "wal"
    assert report["ok"], report["breaches"]
