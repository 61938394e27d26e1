"""A pytest plugin for `bridge ops readiness`: what a pytest run actually did, written as one JSON document.

    python -m pytest -p bridge_ops.pytest_evidence --evidence-out run.json tests/test_store.py

It records, from pytest's own hooks and SQLite's connections (not from reading test source):
- `collected`: the node ids collected, and `marked`: those carrying a skip, skipif or xfail mark;
- `collect_errors` and `collect_skips`: modules that failed to import or skipped themselves (importorskip);
- `outcomes`: per node id, `passed`, `failed` or `skipped` (a failing setup or teardown counts as failed);
- `databases`: every SQLite file the test process opened, through `apsw.connection_hooks` ("" is an in-memory or
  temporary database);
- `durability`: the distinct (database, journal_mode, synchronous) of the connections still open when each test's
  body has run (read with PRAGMAs on those connections; one busy in another thread at that moment is passed over).
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

SKIP_MARKS = ("skip", "skipif", "xfail")


class Recorder:
    """Collects the evidence of one session; writes it at the end."""

    def __init__(self, out: Path):
        self.out = out
        self.collected: list[str] = []
        self.marked: list[dict[str, str]] = []
        self.collect_errors: list[str] = []
        self.collect_skips: list[str] = []
        self.outcomes: dict[str, str] = {}
        self.databases: set[str] = set()
        self.durability: set[tuple[str, str, int]] = set()
        self._open: weakref.WeakSet[apsw.Connection] = weakref.WeakSet()

    def opened(self, conn: apsw.Connection) -> None:
        """apsw connection hook: remember which database file every new connection opened."""
        self.databases.add(conn.filename)
        self._open.add(conn)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self._read_durability()

    def _read_durability(self) -> None:
        for conn in list(self._open):
            with contextlib.suppress(apsw.Error):  # closed, or in use by another thread right now
                mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
                synchronous = conn.execute("PRAGMA synchronous").fetchall()[0][0]
                self.durability.add((conn.filename, mode, synchronous))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(report.nodeid)
        elif report.skipped:
            self.collect_skips.append(report.nodeid)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.collected = [item.nodeid for item in items]
        self.marked = [{"test": item.nodeid, "mark": mark.name} for item in items
                       for mark in item.iter_markers() if mark.name in SKIP_MARKS]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped:
            self.outcomes.setdefault(report.nodeid, "skipped")
        elif report.when == "call":
            self.outcomes.setdefault(report.nodeid, "passed")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.out.write_text(json.dumps(self.document(int(exitstatus)), indent=2), encoding="utf-8")

    def document(self, exitstatus: int) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return {"exitstatus": exitstatus, "collected": self.collected, "marked": self.marked,
                "collect_errors": self.collect_errors, "collect_skips": self.collect_skips,
                "outcomes": self.outcomes, "counts": counts, "databases": sorted(self.databases),
                "durability": [{"database": d, "journal_mode": j, "synchronous": s}
                               for d, j, s in sorted(self.durability)]}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--evidence-out", default=None, help="Write what this run did as JSON to this file.")


def pytest_configure(config: pytest.Config) -> None:
    out = config.getoption("--evidence-out")
    if out:
        recorder = Recorder(Path(out))
        apsw.connection_hooks.append(recorder.opened)
        config.pluginmanager.register(recorder, "bridge-evidence")
