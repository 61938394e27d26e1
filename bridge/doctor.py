"""Preflight checks (`bridge doctor`): Python, dependencies, tmux, database, key file, data dir, port."""

from __future__ import annotations

import errno
import importlib.metadata
import socket
import stat
import subprocess
import sys
from typing import Any

from bridge.auth.keys import KEY_FILE
from bridge.settings import Settings
from bridge.store.engines import CannotOpen, open_problem, opened, store_type
from bridge.store.migrate import latest_version
from bridge.wiring import signing_key

# = pyproject.toml's dependencies (tests/test_operator_cli.py keeps them equal)
DEPENDENCIES = ("apsw", "bottle", "waitress", "pydantic", "click", "prometheus-client", "PyJWT", "cryptography",
                "mcp", "psycopg", "psycopg-pool")


def _result(name: str, ok: bool, detail: str, *, required: bool = True) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail, "required": required}


def run_checks(settings: Settings) -> list[dict[str, Any]]:
    """Every preflight check; none of them changes anything."""
    out = [_result("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    for package in DEPENDENCIES:
        try:
            out.append(_result(f"package {package}", True, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            out.append(_result(f"package {package}", False, "not installed"))
    try:
        version = subprocess.run(["tmux", "-V"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        out.append(_result("tmux", True, version, required=False))
    except (OSError, subprocess.SubprocessError):
        out.append(_result("tmux", False, "not found: waking agents through panes is unavailable", required=False))
    out.append(_database(settings))
    out.append(_key_in_database(settings) if store_type(settings.location).keeps_signing_key else _key_file(settings))
    out.append(_port(settings.host, settings.port))
    return out


def _key_file(settings: Settings) -> dict[str, Any]:
    key = settings.data_dir / KEY_FILE
    if key.exists():
        mode = stat.S_IMODE(key.stat().st_mode)
        return _result("signing key", mode == 0o600, f"{key} mode {mode:o}" + ("" if mode == 0o600 else
                                                                               " (expected 600)"))
    return _result("signing key", True, f"{key} will be created when bridge serve first starts on the database",
                   required=False)


def _key_in_database(settings: Settings) -> dict[str, Any]:
    """The key a database keeps for every host (read without migrating or creating anything)."""
    where = settings.location
    try:
        with opened(settings.db, create=False, migrate_schema=False) as store:
            current = store.schema_version() == latest_version()
            key = signing_key(store, settings.data_dir, create=False) if current else None
    except Exception as exc:  # unreachable: the database check says why
        return _result("signing key", False, f"the key kept in {where} cannot be read: {exc}", required=False)
    if key is None:
        return _result("signing key", True, f"none in {where} yet: bridge serve creates it there on first start, "
                                            "for every host", required=False)
    return _result("signing key", True, f"kept in the database {where} (kid {key.kid}), shared by every host")


def _database(settings: Settings) -> dict[str, Any]:
    """Can the database be used: reachable (or creatable, when a file is missing), a current schema, invariants
    holding. Names the database as people see it (a PostgreSQL URL without its password)."""
    where = settings.location
    if open_problem(where, create=False) is not None:
        problem = open_problem(where, create=True)
        if problem is not None:
            return _result("database", False, f"{where} cannot be created: {problem}")
        return _result("database", True, f"{where} does not exist: bridge serve (or bridge db migrate) creates it; "
                                         "every other command refuses a missing database", required=False)
    try:
        from bridge.store import maintenance

        verdict = maintenance.check(settings.db)
    except CannotOpen as exc:
        return _result("database", False, f"{where} cannot be reached: {exc}")
    except Exception as exc:
        return _result("database", False, f"{where}: {exc}")
    if verdict["ok"]:
        return _result("database", True, f"{where}: schema {verdict['schema_version']}, "
                                         f"{', '.join(verdict['checks'])} ok")
    return _result("database", False, f"{where}: {[p['check'] for p in verdict['problems']]}")


def bind_problem(host: str, port: int) -> str | None:
    """Why `bridge serve` could not listen on host:port (in use, not this machine's address, not allowed), or None.

    Binds and closes a socket like the server's (SO_REUSEADDR), so it changes nothing; port 0 always binds."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve the host {host!r}: {exc.strerror}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return bind_reason(host, port, exc)
    return None


LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def bind_reason(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use (another bridge serve?): stop it or choose another port with "
                "--port or BRIDGE_PORT")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: choose another with --host or BRIDGE_HOST"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} on {host}: choose a port above 1023 with --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def _port(host: str, port: int) -> dict[str, Any]:
    problem = bind_problem(host, port)
    if problem is None:
        return _result("port", True, f"{host}:{port} is free")
    return _result("port", True, problem, required=False)
