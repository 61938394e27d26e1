"""Runtime adapters as data: each kind names its resume and spawn argv templates.

Templates are lists of strings with `{session_id}`, `{prompt}`, `{agent_id}`, `{thread_id}`, `{trigger_id}`
placeholders, rendered per argument (a placeholder's value is one argument, never split, never a shell). A JSON
file (`--runtimes-file` / `BRIDGE_RUNTIMES_FILE`) overrides or adds kinds, e.g.
`{"generic": {"resume": ["my-agent", "--resume", "{session_id}", "{prompt}"], "spawn": ["my-agent", "{prompt}"]}}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

from bridge.services.command_lines import PLACEHOLDERS

DEFAULT_TEMPLATES: dict[str, dict[str, list[str] | None]] = {
    "codex": {"resume": ["codex", "exec", "resume", "{session_id}", "{prompt}"],
              "spawn": ["codex", "exec", "{prompt}"]},
    "claude": {"resume": ["claude", "-p", "--resume", "{session_id}", "{prompt}"],
               "spawn": ["claude", "-p", "{prompt}"]},
    "generic": {"resume": None, "spawn": None},
}


def load_templates(path: str | None) -> dict[str, dict[str, list[str] | None]]:
    """Built-in templates overlaid with a JSON file's; raise ValueError on a malformed file."""
    templates = {kind: dict(entry) for kind, entry in DEFAULT_TEMPLATES.items()}
    if path is None:
        return templates
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("runtimes file must hold an object of kinds")
    for kind, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"resume", "spawn"}:
            raise ValueError(f"runtime {kind!r}: expected an object with 'resume' and/or 'spawn'")
        for step, argv in entry.items():
            if argv is not None:
                _check_template(kind, step, argv)
        templates.setdefault(kind, {"resume": None, "spawn": None}).update(entry)
    return templates


def _check_template(kind: str, step: str, argv: object) -> None:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"runtime {kind!r} {step}: expected a non-empty list of strings")
    for arg in argv:
        for _, name, _, _ in Formatter().parse(arg):
            if name is not None and name not in PLACEHOLDERS:
                raise ValueError(f"runtime {kind!r} {step}: unknown placeholder {{{name}}}")


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    detail: str
    interrupted: bool = False  # stopped by `cancel` (worker shutdown): no verdict on the runtime


def run_command(argv: Sequence[str], *, timeout: float, cwd: str | None = None,
                env: Mapping[str, str] | None = None, cancel: threading.Event | None = None) -> CommandResult:
    """Run an argv list (never a shell) with a timeout, stdin from /dev/null and exactly `env` (default: the
    worker's); the process group is killed on timeout, or as soon as `cancel` is set (a worker shutting down must
    not wait for, nor leave behind, a long-running command)."""
    if cancel is not None and cancel.is_set():
        return CommandResult(False, "not started: worker stopping", interrupted=True)
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=cwd if cwd and os.path.isdir(cwd) else None,
                                env=dict(os.environ if env is None else env), start_new_session=True)
    except OSError as exc:
        return CommandResult(False, f"could not start {argv[0]!r}: {exc.strerror or exc}")
    deadline = time.monotonic() + timeout
    with proc:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=max(0.0, min(deadline - time.monotonic(), 0.2)))
                break
            except subprocess.TimeoutExpired:
                stopping = cancel is not None and cancel.is_set()
                if not stopping and time.monotonic() < deadline:
                    continue
            # the command leads its own session: kill the whole group, so children it started die with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.communicate()
            if stopping:
                return CommandResult(False, "interrupted: worker stopping", interrupted=True)
            return CommandResult(False, f"timed out after {timeout:g}s")
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [""]
        return CommandResult(False, f"exit {proc.returncode}: {tail[0][:200]}")
    return CommandResult(True, "exit 0")
