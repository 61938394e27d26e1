"""Preflight checks (`bridge doctor`): Python, dependencies, tmux, database, key file, data dir, port."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import stat
import subprocess
import sys
from typing import Any

from bridge.auth.keys import KEY_FILE
from bridge.settings import Settings

DEPENDENCIES = ("apsw", "bottle", "waitress", "pydantic", "click", "prometheus-client", "PyJWT", "cryptography")


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
    key = settings.data_dir / KEY_FILE
    if key.exists():
        mode = stat.S_IMODE(key.stat().st_mode)
        out.append(_result("signing key", mode == 0o600, f"{key} mode {mode:o}" + ("" if mode == 0o600 else
                                                                                   " (expected 600)")))
    else:
        out.append(_result("signing key", True, f"{key} will be created on first start", required=False))
    out.append(_port(settings.host, settings.port))
    return out


def _database(settings: Settings) -> dict[str, Any]:
    path = settings.db_path
    if not path.exists():
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            return _result("database", False, f"{path} cannot be created: {parent} is not a writable directory")
        return _result("database", True, f"{path} will be created on first start", required=False)
    try:
        from bridge.store import maintenance

        verdict = maintenance.check(path)
    except Exception as exc:
        return _result("database", False, f"{path}: {exc}")
    if verdict["ok"]:
        return _result("database", True, f"{path}: schema {verdict['schema_version']}, integrity and invariants ok")
    return _result("database", False, f"{path}: {[p['check'] for p in verdict['problems']]}")


def _port(host: str, port: int) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect((host, port))
        except OSError:
            return _result("port", True, f"{host}:{port} is free")
    return _result("port", True, f"{host}:{port} is in use (a bridge may already be running)", required=False)
