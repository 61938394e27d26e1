"""The bridge as users run it, for the ops tools, the demo and the end-to-end tests.

`service_stack()` starts, in a `Stack`: `bridge serve` with its supervisor worker, the default timings of
bridge/settings.py, `synchronous=FULL`, log level WARNING, and the stand-in runtimes file (BRIDGE_RUNTIMES_FILE) so a
resume or spawn fallback also completes; the private tmux socket is `bridge-ops-<hex>`. `ServiceStack` adds
`describe()`, the evidence of what is running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bridge.domain.location import parse
from bridge.testing.stack import Stack
from bridge.worker.tmux import TmuxError


class ServiceStack(Stack):
    """A stack with the default timings whose server runs with `server_env` (see the module docstring)."""

    def __init__(self, workdir: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                 db: str = "bridge.db"):
        super().__init__(workdir, timings={}, tmux_prefix="bridge-ops", db=db)
        self.server_env = {"BRIDGE_RUNTIMES_FILE": str(self.standin_runtimes()), "BRIDGE_LOG_LEVEL": "WARNING",
                           **(env or {}), "BRIDGE_SYNCHRONOUS": "FULL"}

    def _database(self) -> dict[str, Any]:
        """The database's evidence: the file, its WAL, journal mode and schema (SQLite), or the engine and schema."""
        from bridge.store.migrate import recorded_version
        from bridge.testing.database import reading

        with reading(self.db) as conn:
            schema = recorded_version(conn)
            if not isinstance(self.db, Path):
                return {"db": str(parse(self.db)), "engine": "postgresql", "schema_version": schema}
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
        wal = self.db.with_name(self.db.name + "-wal")
        return {"db": str(self.db), "engine": "sqlite", "db_bytes": self.db.stat().st_size if self.db.exists() else 0,
                "wal_bytes": wal.stat().st_size if wal.exists() else 0, "journal_mode": mode,
                "schema_version": schema}

    def _tmux_number(self, fmt: str, *target: str) -> int | None:
        """A number tmux displays (`#{pid}` of the server, `#{pane_pid}` with `-t <pane>`); None when it is gone."""
        with contextlib.suppress(TmuxError, ValueError):
            return int(self.tmux.run("display-message", "-p", *target, fmt).strip())
        return None

    def describe(self) -> dict[str, Any]:
        """Evidence of what is running: processes, addresses, files, durability, panes."""
        if self.server is None:
            raise RuntimeError("no server is running")
        try:
            cmdline = Path(f"/proc/{self.server.pid}/cmdline").read_bytes().split(b"\0")
            server_cmd = " ".join(part.decode(errors="replace") for part in cmdline if part)
        except OSError:
            server_cmd = None
        return {
            "url": self.url, "server_pid": self.server.pid, "server_cmdline": server_cmd,
            "server_env": self.server_env, "synchronous": self.server_env["BRIDGE_SYNCHRONOUS"],
            **self._database(),
            "tmux_socket": self.tmux_socket, "tmux_server_pid": self._tmux_number("#{pid}"),
            "standins": [{"agent_id": agent, "pane": pane, "pid": self._tmux_number("#{pane_pid}", "-t", pane)}
                         for agent, pane in self.panes.items()],
        }


@contextlib.contextmanager
def service_stack(workdir: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                  ready_timeout: float = 60.0, db: str = "bridge.db") -> Iterator[ServiceStack]:
    """The running service (in `workdir`, else a temporary directory) on `db` (a SQLite file relative to the
    workdir, or a PostgreSQL URL); `env` adds `BRIDGE_*` settings for the server (durability is always FULL).
    Everything is stopped by PID on exit. No tmux: RuntimeError before anything starts."""
    with ServiceStack(workdir, env=env, db=db) as stack:
        stack.tmux  # noqa: B018 - tmux missing: refuse before starting anything
        stack.serve("server", worker=True, env=stack.server_env, timeout=ready_timeout)
        yield stack
