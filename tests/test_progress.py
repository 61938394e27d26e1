"""Long commands show progress on a terminal and stay quiet (machine-readable) elsewhere; `bridge ops readiness`
refuses at once, with the way to install them, when what its rows run is missing.

"A terminal" is a real pseudo-terminal (`pty.openpty`): for the helper in-process, for `bridge db check` and
`bridge db backup` as real processes with their stderr on it.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import TextIO

import pytest
from bridge_ops import readiness
from bridge_ops.acceptance import Evidence
from bridge_ops.reliability.figures import Scale

from bridge.cli.progress import Progress
from bridge.testing.processes import bridge_argv, clean_env, run_bridge

ROOT = Path(__file__).resolve().parent.parent
BLOCKER = ("import sys\n"
           "class Block:\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           "        if name.split('.')[0] in {'pytest', 'pytest_benchmark'}:\n"
           "            raise ImportError(f'test extra {name} imported')\n"
           "sys.meta_path.insert(0, Block())\n"
           "from bridge.cli.main import cli\n"
           "cli(sys.argv[1:], prog_name='bridge')\n")


class Terminal:
    """A pseudo-terminal: `slave` is the terminal side, `text()` what was written to it (after it is closed)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every terminal side is closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def text(self) -> str:
        self._reader.join(timeout=30)
        os.close(self.master)
        return b"".join(self._chunks).decode().replace("\r\n", "\n")


@contextmanager
def terminal_stream() -> Iterator[tuple[TextIO, Callable[[], str]]]:
    term = Terminal()
    stream = os.fdopen(term.slave, "w", encoding="utf-8")
    yield stream, term.text
    if not stream.closed:
        stream.close()


def on_terminal(write: Callable[[TextIO], None]) -> str:
    """What `write(stream)` shows on a terminal."""
    with terminal_stream() as (stream, text):
        write(stream)
        stream.close()
        return text()


def two_steps(stream: TextIO, as_json: bool = False) -> None:
    progress = Progress(2, as_json=as_json, stream=stream)
    with progress.step("first"):
        pass
    with progress.step("second") as step:
        step.verdict = "FAIL"


def bridge_outcome(*args: str, stderr_on_terminal: bool) -> tuple[int, str, str]:
    """`bridge ARGS` as a real process: (exit code, stdout, stderr), stdout piped, stderr on a terminal or piped."""
    if not stderr_on_terminal:
        done = run_bridge(*args)
        return done.returncode, done.stdout, done.stderr
    term = Terminal()
    try:
        proc = subprocess.Popen(bridge_argv(*args), stdout=subprocess.PIPE, stderr=term.slave, text=True,
                                env=clean_env())
    finally:
        os.close(term.slave)
    stdout, _ = proc.communicate(timeout=60)
    return proc.returncode, stdout, term.text()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.db"
    code, stdout, stderr = bridge_outcome("db", "migrate", "--db", str(path), stderr_on_terminal=False)
    assert code == 0, stdout + stderr
    return path


# ------------------------------------------------------------------------------------------------ the helper
def test_steps_print_status_rows_on_a_terminal():
    shown = on_terminal(two_steps)
    lines = shown.splitlines()
    assert [line.split(" ... ")[0] for line in lines] == ["step 1/2: first", "step 2/2: second"], shown
    assert lines[0].split(" ... ")[1].startswith("ok (") and lines[0].endswith("s)"), shown
    assert lines[1].split(" ... ")[1].startswith("FAIL ("), shown


def test_a_step_that_raises_ends_its_row_as_an_error_and_propagates():
    def crash(stream: TextIO) -> None:
        with pytest.raises(RuntimeError), Progress(1, stream=stream).step("boom"):
            raise RuntimeError("boom")

    assert on_terminal(crash).startswith("step 1/1: boom ... error (")


def test_nothing_is_printed_off_a_terminal_or_with_json():
    piped = StringIO()
    two_steps(piped)
    assert piped.getvalue() == ""
    assert on_terminal(lambda stream: two_steps(stream, as_json=True)) == ""


def test_the_progress_bar_is_drawn_on_a_terminal_only():
    def loop(stream: TextIO, as_json: bool = False) -> None:
        with Progress(1, as_json=as_json, stream=stream).bar(3, "sli iterations") as update:
            for _ in range(3):
                update(1)

    shown = on_terminal(loop)
    assert "sli iterations" in shown and "3/3" in shown, shown
    assert on_terminal(lambda stream: loop(stream, as_json=True)) == ""
    piped = StringIO()
    loop(piped)
    assert piped.getvalue() == ""


def test_readiness_rows_and_reliability_scenarios_report_through_the_helper(tmp_path, monkeypatch):
    from bridge_ops.reliability import cli as reliability_cli

    def rows(stream: TextIO) -> None:
        progress = Progress(len(readiness.ITEMS), stream=stream)
        good, bad = Evidence(), Evidence()
        good.check("passes", True, None)
        bad.check("fails on purpose", False, None)
        readiness._timed("drills", lambda: (good, "fine"), progress)
        readiness._timed("sli", lambda: (bad, "not fine"), progress)

    shown = on_terminal(rows).splitlines()
    assert shown[0].startswith(f"step 1/9: {readiness.ITEMS['drills']} ... GO ("), shown
    assert shown[1].startswith(f"step 2/9: {readiness.ITEMS['sli']} ... NO-GO ("), shown

    monkeypatch.setattr(reliability_cli, "run_scenario", lambda name, scale, root: {
        "name": name, "status": "ok", "seconds": 0.0, "figures": [{"passed": name == "crash"}]})

    def scenarios(stream: TextIO) -> None:
        report = reliability_cli.run_suite(["crash", "writers"], Scale(1), tmp_path, Progress(2, stream=stream))
        assert report["passed"] is False

    shown = on_terminal(scenarios).splitlines()
    assert [line.split(" (")[0] for line in shown] == ["step 1/2: reliability crash ... PASS",
                                                       "step 2/2: reliability writers ... FAIL"], shown


# ------------------------------------------------------------------------------------------------ the commands
def test_db_check_and_backup_show_progress_on_a_terminal_only(database, tmp_path):
    code, stdout, stderr = bridge_outcome("db", "check", "--db", str(database), stderr_on_terminal=True)
    assert code == 0 and stdout.startswith("ok: "), (stdout, stderr)
    assert stderr.startswith(f"step 1/1: check {database} ... ok ("), stderr

    code, stdout, stderr = bridge_outcome("db", "check", "--db", str(database), "--json", stderr_on_terminal=True)
    assert (code, stderr) == (0, "") and json.loads(stdout)["ok"] is True
    code, stdout, stderr = bridge_outcome("db", "check", "--db", str(database), stderr_on_terminal=False)
    assert (code, stderr) == (0, "") and stdout.startswith("ok: ")

    copy = tmp_path / "copy.db"
    code, stdout, stderr = bridge_outcome("db", "backup", "--db", str(database), "--out", str(copy),
                                          stderr_on_terminal=True)
    assert code == 0 and copy.exists(), (stdout, stderr)
    assert stderr.startswith(f"step 1/1: backup {database} to {copy} ... ok ("), stderr
    code, stdout, stderr = bridge_outcome("db", "backup", "--db", str(database), "--out", str(tmp_path / "c2.db"),
                                          "--json", stderr_on_terminal=True)
    assert (code, stderr) == (0, "") and json.loads(stdout)["backup"] == str(tmp_path / "c2.db")


# ------------------------------------------------------------------------------------------------ readiness preflight
def readiness_without(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`bridge ops readiness` in a process where pytest and pytest-benchmark cannot be imported."""
    env = clean_env({"TMPDIR": str(tmp_path)})
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-c", BLOCKER, "ops", "readiness", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=str(ROOT), check=False)


def test_readiness_without_the_test_extras_refuses_at_once_with_the_install_hint(tmp_path):
    done = readiness_without(tmp_path)
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: UNAVAILABLE: ") and "missing: pytest, pytest-benchmark:" in line, line
    assert "pip install -e '.[test]'" in line and "./scripts/test" in line, line
    assert not list(tmp_path.glob("bridge-readiness-*")), "it started working before refusing"

    done = readiness_without(tmp_path, "--json")
    assert done.returncode == 4 and done.stdout == ""
    error = json.loads(done.stderr)["error"]
    assert error["code"] == "UNAVAILABLE" and error["details"] == {"missing": ["pytest", "pytest-benchmark"]}


def test_readiness_without_tmux_names_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = readiness_without(tmp_path, "--json", path=str(empty))
    assert done.returncode == 4, done.stdout + done.stderr
    assert json.loads(done.stderr)["error"]["details"]["missing"] == ["pytest", "pytest-benchmark", "tmux"]


def test_nothing_is_missing_where_the_test_extras_and_tmux_are_installed():
    assert readiness.missing_prerequisites() == []
