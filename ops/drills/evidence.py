"""The evidence record of one drill run, written as JSON: what ran, what was seen, what was checked, and `pass`.

Its shape (read by tests/test_drills.py and `bridge ops readiness`): the drill's name, title, runbook, injects and
verifies; `started_at`/`finished_at`/`duration_seconds`; `pass` and `failure`; `environment`; `timeline` (every
entry with `at`, `t` seconds since the start, `type` and `what`); `commands`, `observations` and `checks` (the
timeline entries of those types); `processes` (every child started, with its exit); `cleanup`. Bearer tokens never
reach it (`redact`), and command output is clipped (`clip`).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 4000  # characters of a command's stdout/stderr kept in the evidence
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class DrillFailed(Exception):
    """A check of the drill did not hold (or a step could not be carried out)."""


def now_iso() -> str:
    """UTC now with milliseconds and `Z` (the bridge's wire format)."""
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def redact(text: str) -> str:
    """Replace every JWT in `text` by `<jwt:…last 6 chars>`."""
    return _JWT.sub(lambda m: f"<jwt:...{m.group(0)[-6:]}>", text)


def clip(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Bounded, and without bearer tokens: the evidence may be shared, a token must not be."""
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """The decoded header (0) or claims (1) of a JWT, unverified (to diagnose, never to trust)."""
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def display(argv: Sequence[str]) -> str:
    """An argv as a shell line, with this interpreter shown as `python` and `python -m bridge` as `bridge`."""
    words = [("python" if a == sys.executable else a) for a in argv]
    if words[:3] == ["python", "-m", "bridge"]:
        words = ["bridge", *words[3:]]
    return shlex.join(words)


@dataclass
class CommandResult:
    """A finished `bridge ...` (or other) command."""

    display: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    def json(self) -> Any:
        """stdout parsed as JSON (commands run with `--json`)."""
        return json.loads(self.stdout)


class Evidence:
    """The record being written during a run (`record`, a JSON-ready dict) and its clock."""

    def __init__(self, about: dict[str, str], environment: dict[str, Any]):
        self.started = time.monotonic()
        self.record: dict[str, Any] = {
            **about, "started_at": now_iso(), "finished_at": None, "duration_seconds": None, "pass": False,
            "failure": None, "environment": environment,
            "timeline": [], "commands": [], "observations": [], "checks": [], "processes": [], "cleanup": [],
        }

    def since_start(self, moment: float | None = None) -> float:
        return round((time.monotonic() if moment is None else moment) - self.started, 3)

    def add(self, kind: str, what: str, **data: Any) -> dict[str, Any]:
        """A timeline entry (also listed under `observations`/`checks` for those kinds); the entry."""
        entry = {"at": now_iso(), "t": self.since_start(), "type": kind, "what": what, **data}
        self.record["timeline"].append(entry)
        if kind in ("observation", "check"):
            self.record[f"{kind}s"].append(entry)
        return entry

    def command(self, result: CommandResult, at: str, started: float, env: dict[str, str] | None) -> None:
        """A finished command: its redacted line, exit code, duration and clipped output."""
        entry = {"at": at, "t": self.since_start(started), "type": "command", "what": redact(result.display),
                 "exit_code": result.exit_code, "duration_seconds": result.duration, "stdout": clip(result.stdout),
                 "stderr": clip(result.stderr)}
        if env:
            entry["env"] = env
        self.record["timeline"].append(entry)
        self.record["commands"].append(entry)

    def http(self, method: str, url: str, path: str, reply: Any) -> None:
        """One HTTP exchange (a `bridge.testing.client.Reply`): the status, and the error envelope (with any
        Retry-After) or, for /health and /ready, the body."""
        entry: dict[str, Any] = {"status": reply.status}
        if reply.error:
            entry["error"] = reply.error
        if reply.code:
            entry["envelope"] = reply.body
            if reply.retry_after is not None:
                entry["retry_after"] = reply.retry_after
        elif path in ("/health", "/ready"):
            entry["body"] = reply.body
        self.add("http", f"{method} {url}{path}", **entry)

    def process(self, record: dict[str, Any], what: str, **timeline: Any) -> dict[str, Any]:
        """A child started: `record` (name, pid, command, ...) is listed under `processes`, where its exit is
        filled in later, and `what` goes into the timeline; the record."""
        record = {**record, "started_at": now_iso()}
        self.record["processes"].append(record)
        self.add("process", what, **timeline)
        return record

    def finish(self, error: BaseException | None, logs: dict[str, str]) -> None:
        """The verdict: `pass`, the duration, and for a failure its message, traceback and the children's logs."""
        self.record.update(finished_at=now_iso(), duration_seconds=self.since_start(), **{"pass": error is None})
        if error is not None:
            self.record["failure"] = {"message": str(error)[:4000], "type": type(error).__name__,
                                      "traceback": "".join(traceback.format_exception(error))[-6000:],
                                      "logs": {name: clip(text[-6000:], 6000) for name, text in logs.items()}}

    def write(self, out_dir: Path, name: str) -> None:
        """<out_dir>/<name>.json; its path is noted as `evidence_file` (after writing: not part of the file)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(self.record, indent=2, default=str) + "\n", encoding="utf-8")
        self.record["evidence_file"] = str(path)
