"""`bridge ops scale` end to end on tiny histories: the report's shape, positive figures and the seeded counts (no
timing is judged here: the real sizes are a manual run, see benchmarks/README.md)."""

from __future__ import annotations

import json

import pytest
from bridge_ops.cli import ops
from bridge_ops.scale import ROWS, parse_size
from click.testing import CliRunner


def test_sizes_parse():
    one, spread = parse_size("1m-one"), parse_size("2k-spread")
    assert (one.messages, one.threads) == (1_000_000, 1)
    assert (spread.messages, spread.threads) == (2_000, 20)
    assert (parse_size("1k").messages, parse_size("1k").threads) == (1_000, 1)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_scale_report_on_tiny_sizes(tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(ops, ["scale", "--sizes", "200-one,2k-spread", "--samples", "5", "--wake-samples",
                                      "2", "--budget", "2", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert result.exit_code in (0, 1), result.output  # 1: a target missed (timings are not judged here)
    report = json.loads(out.read_text())
    assert report["sizes"] == ["200-one", "2k-spread"] and report["baseline"] == "200-one"
    seeded = {r["size"]: r["seeded"] for r in report["results"]}
    assert (seeded["200-one"]["messages"], seeded["200-one"]["threads"]) == (200, 1)
    assert (seeded["2k-spread"]["messages"], seeded["2k-spread"]["threads"]) == (2_000, 20)
    assert seeded["2k-spread"]["measured_thread_messages"] == 100
    for result_of_size in report["results"]:
        assert result_of_size["server_rss_mb"] > 0 and result_of_size["first_tick_ms"] > 0
        assert result_of_size["server_memory"]["processes"] >= 1
        for op in ROWS:
            stats = result_of_size["ops"][op]
            assert stats["count"] >= 1 and stats["failed"] == 0, (result_of_size["size"], op, stats)
            assert stats["p50"] > 0 and stats["p95"] >= stats["p50"]
    rows = {row["name"]: row for row in report["verdicts"]}
    assert set(rows) == {*ROWS, "server_rss_mb"}
    assert all(rows[op]["ratios"]["2k-spread"] > 0 for op in ROWS)
    assert not (tmp_path / "work" / "200-one").exists()  # removed without --keep
    assert "verdict" in result.output  # the table was printed
