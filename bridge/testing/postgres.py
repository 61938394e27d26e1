"""A throwaway PostgreSQL server for tests and benchmarks: its own cluster in a temp dir, stopped by PID.

`PostgresServer` finds the server binaries (`pg_config --bindir`, else the newest `/usr/lib/postgresql/<N>/bin`),
runs `initdb` in a fresh temp dir (trust auth for the superuser `bridge`), and starts `postgres` on 127.0.0.1 and a
free port with its socket in that dir. PostgreSQL refuses to run as root, so as root both run as `nobody` (through
`setpriv`, which execs: the PID started is the postmaster's). `durable=False` (the test default) turns off fsync,
synchronous commit and full-page writes; benchmarks pass `durable=True`. `stop()` sends the postmaster SIGINT (fast
shutdown), SIGKILLs its process group if it outlives the grace period, and removes the temp dir.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from bridge.testing.processes import HOST, unused_port

SUPERUSER = "bridge"
START_TIMEOUT = 30.0
STOP_GRACE = 10.0
PORT_ATTEMPTS = 3  # a free port can be taken between probing and binding it
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or the server did not start."""


def server_bindir() -> Path:
    """The directory holding `initdb` and `postgres`: `pg_config --bindir` when it has both, else the newest
    `/usr/lib/postgresql/<N>/bin`."""
    if shutil.which("pg_config"):
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                     check=False).stdout.strip())
        if _has_server(bindir):
            return bindir
    versions = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if d.parent.name.isdigit() and _has_server(d)]
    if not versions:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, postgres) found: install the Debian "
                                  "package `postgresql` (scripts/_env.sh does when missing)")
    return max(versions, key=lambda d: int(d.parent.name))


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def _as_unprivileged(argv: list[str]) -> list[str]:
    """`argv` run as `nobody` when this process is root (PostgreSQL refuses root), else unchanged."""
    if os.geteuid() != 0:
        return argv
    nobody = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--", *argv]


class PostgresServer:
    """One private PostgreSQL cluster: `start()` (or `with`), `url()`, `create_database()`, `stop()`."""

    def __init__(self, *, durable: bool = False):
        self.durable = durable
        self.directory: Path | None = None
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The postmaster's PID."""
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        assert self.directory is not None, "not started"
        return self.directory / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """The connection URL of one database (trust auth as the superuser)."""
        assert self.port is not None, "not started"
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def start(self) -> PostgresServer:
        """Make the cluster and start the server; return once it accepts connections."""
        bindir = server_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        try:
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.chown(self.directory, nobody.pw_uid, nobody.pw_gid)
            self._initdb(bindir)
            for _ in range(PORT_ATTEMPTS):
                if self._launch(bindir, unused_port()):
                    break
            else:
                raise PostgresUnavailable(f"no free port after {PORT_ATTEMPTS} attempts; log tail:\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self, bindir: Path) -> None:
        assert self.directory is not None
        argv = [str(bindir / "initdb"), "-D", str(self.directory / "data"), "-U", SUPERUSER, "--auth=trust",
                "-E", "UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(_as_unprivileged(argv), cwd=self.directory, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _launch(self, bindir: Path, port: int) -> bool:
        """Start the postmaster on `port` and wait until it answers. False when it exited early because the port
        was taken (the caller tries another); raises on any other failure."""
        assert self.directory is not None
        settings = [f"listen_addresses={HOST}", "max_connections=200", *(() if self.durable else _FAST)]
        argv = [str(bindir / "postgres"), "-D", str(self.directory / "data"), "-p", str(port),
                "-k", str(self.directory), *(arg for setting in settings for arg in ("-c", setting))]
        with self.log_path.open("ab") as log:
            start = log.tell()
            self._process = subprocess.Popen(_as_unprivileged(argv), cwd=self.directory, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.port = port
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                if "Address already in use" in self._log_tail(since=start):
                    return False
                raise PostgresUnavailable(f"postgres exited while starting; log tail:\n{self._log_tail(since=start)}")
            with contextlib.suppress(psycopg.OperationalError), psycopg.connect(self.url(), connect_timeout=2):
                return True
            time.sleep(0.1)
        raise PostgresUnavailable(f"postgres did not accept connections in {START_TIMEOUT:.0f} s; log tail:\n"
                                  f"{self._log_tail()}")

    def _log_tail(self, since: int = 0, lines: int = 30) -> str:
        """The last lines the server logged after byte offset `since`."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database (a unique name when none is given); returns its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any sessions still connected to it."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Fast shutdown by the postmaster's PID (SIGKILL to its process group after the grace period), then remove
        the temp dir. Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
