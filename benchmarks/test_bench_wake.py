"""Message-to-wake and message-to-ack through the real pipeline (tmux, stand-in agent, worker, HTTP, FULL).

    python -m pytest benchmarks/test_bench_wake.py --benchmark-only -s

pytest-benchmark times the whole run of N posts; the per-message latencies (p50/p95/p99 from the bridge's own
timestamps) are in the benchmark's `extra_info` and printed. Target: p95 message-to-wake ≤ 100 ms.
"""

from __future__ import annotations

import json

from bridge_ops.wake_latency import run_wake_latency

ITERATIONS = 100


def test_message_to_wake_and_ack(benchmark, tmp_path):
    report = benchmark.pedantic(run_wake_latency, kwargs={"iterations": ITERATIONS, "workdir": tmp_path},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(report)
    print(json.dumps(report, indent=2))
    assert report["iterations"] == ITERATIONS
    assert report["last_envelope_visible_in_pane"]
