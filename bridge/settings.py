"""Every default and every BRIDGE_* override, validated once.

Precedence: CLI flags > environment (`BRIDGE_*`) > the defaults below. Invalid configuration fails fast with one
error listing every bad setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.domain.location import Location
from bridge.domain.location import parse as parse_location
from bridge.errors import ConfigError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^(\d+)(b|kib|kb|k|mib|mb|m)?$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def parse_duration(value: str | float | int) -> float:
    """Parse `500ms`, `20s`, `5m`, `8h`, `1d` or a bare number of seconds into seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"not a duration: {value!r} (use forms like 500ms, 20s, 8h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_size(value: str | int) -> int:
    """Parse `262144`, `256KiB` or `1MiB` into bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(f"not a size: {value!r} (use forms like 262144, 256KiB, 1MiB)")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("not an integer")
    return int(value)


def _str(value: Any) -> str:
    return str(value)


def _sync(value: Any) -> str:
    text = str(value).upper()
    if text not in ("FULL", "NORMAL"):
        raise ValueError("must be FULL or NORMAL")
    return text


MAX_AUTO_PROCESSES = 4
_ORIGIN = re.compile(r"^([a-z][a-z0-9+.-]*)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?$")


def parse_origins(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse `http://host[:port],https://other` (or a list) into normalised origins (lower case, no trailing /)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    origins = []
    for item in items:
        origin = str(item).strip().rstrip("/").lower()
        if not origin:
            continue
        if not _ORIGIN.match(origin):
            raise ValueError(f"not an origin: {item!r} (use scheme://host[:port], e.g. https://app.example)")
        origins.append(origin)
    return tuple(origins)


# Timings that spin (too small) or stall (too large) the loops that use them: (field, least, most) in seconds.
_BOUNDED_DURATIONS = (
    ("commit_poll", 0.001, 1.0), ("storage_probe_interval", 0.01, 60.0), ("worker_tick_gap", 0.0, 1.0),
    ("leader_lease", 0.3, 300.0), ("ack_recheck", 0.01, 60.0), ("busy_recheck", 0.01, 60.0),
    ("launch_settle", 0.0, 60.0),
)


def _setting(default: Any, env: str, parse: Callable[[Any], Any]) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one bridge process."""

    host: str = _setting("127.0.0.1", "BRIDGE_HOST", _str)
    port: int = _setting(8765, "BRIDGE_PORT", _int)
    db: str = _setting("./bridge.db", "BRIDGE_DB", _str)
    data: str = _setting("", "BRIDGE_DATA_DIR", _str)  # "": see data_dir
    workspace: str = _setting("default", "BRIDGE_WORKSPACE", _str)
    synchronous: str = _setting("FULL", "BRIDGE_SYNCHRONOUS", _sync)
    busy_timeout: float = _setting(5.0, "BRIDGE_BUSY_TIMEOUT", parse_duration)
    threads: int = _setting(32, "BRIDGE_THREADS", _int)
    processes: int = _setting(0, "BRIDGE_PROCESSES", _int)  # 0: see serve_processes
    long_poll_per_agent: int = _setting(4, "BRIDGE_LONG_POLL_PER_AGENT", _int)
    long_poll_total: int | None = _setting(None, "BRIDGE_LONG_POLL_TOTAL", _int)  # None: half the threads
    request_read_timeout: float = _setting(10.0, "BRIDGE_REQUEST_READ_TIMEOUT", parse_duration)
    issuer: str = _setting("bridge-local", "BRIDGE_ISSUER", _str)
    audience: str = _setting("bridge", "BRIDGE_AUDIENCE", _str)
    jwks_file: str | None = _setting(None, "BRIDGE_JWKS_FILE", _str)
    jwks_url: str | None = _setting(None, "BRIDGE_JWKS_URL", _str)
    jwks_ca_file: str | None = _setting(None, "BRIDGE_JWKS_CA_FILE", _str)
    token_max_ttl: float = _setting(24 * 3600.0, "BRIDGE_TOKEN_MAX_TTL", parse_duration)
    token_leeway: float = _setting(5.0, "BRIDGE_TOKEN_LEEWAY", parse_duration)
    token_ttl: float = _setting(8 * 3600.0, "BRIDGE_TOKEN_TTL", parse_duration)
    max_body: int = _setting(256 * 1024, "BRIDGE_MAX_BODY", parse_size)
    max_header: int = _setting(16 * 1024, "BRIDGE_MAX_HEADER", parse_size)
    write_quota_per_min: int = _setting(120, "BRIDGE_WRITE_QUOTA_PER_MIN", _int)
    write_burst: int = _setting(30, "BRIDGE_WRITE_BURST", _int)
    refusal_audits_per_min: int = _setting(60, "BRIDGE_REFUSAL_AUDITS_PER_MIN", _int)
    refusal_audit_burst: int = _setting(20, "BRIDGE_REFUSAL_AUDIT_BURST", _int)
    write_batch: int = _setting(128, "BRIDGE_WRITE_BATCH", _int)
    commit_poll: float = _setting(0.005, "BRIDGE_COMMIT_POLL", parse_duration)
    storage_probe_interval: float = _setting(1.0, "BRIDGE_STORAGE_PROBE_INTERVAL", parse_duration)
    eviction_log_interval: float = _setting(60.0, "BRIDGE_EVICTION_LOG_INTERVAL", parse_duration)
    loop_guard_turns: int = _setting(20, "BRIDGE_LOOP_GUARD_TURNS", _int)
    loop_guard_repeats: int = _setting(3, "BRIDGE_LOOP_GUARD_REPEATS", _int)
    worker_poll: float = _setting(5.0, "BRIDGE_WORKER_POLL", parse_duration)
    worker_lease: float = _setting(30.0, "BRIDGE_WORKER_LEASE", parse_duration)
    leader_lease: float = _setting(3.0, "BRIDGE_LEADER_LEASE", parse_duration)
    worker_tick_gap: float = _setting(0.01, "BRIDGE_WORKER_TICK_GAP", parse_duration)
    worker_claim_batch: int = _setting(16, "BRIDGE_WORKER_CLAIM_BATCH", _int)
    worker_jobs_per_tick: int = _setting(256, "BRIDGE_WORKER_JOBS_PER_TICK", _int)
    ack_recheck: float = _setting(0.2, "BRIDGE_ACK_RECHECK", parse_duration)
    busy_recheck: float = _setting(0.5, "BRIDGE_BUSY_RECHECK", parse_duration)
    ack_timeout: float = _setting(8.0, "BRIDGE_ACK_TIMEOUT", parse_duration)
    delivery_retries: int = _setting(2, "BRIDGE_DELIVERY_RETRIES", _int)
    quiet_window: float = _setting(20.0, "BRIDGE_QUIET_WINDOW", parse_duration)
    defer_recheck: float = _setting(5.0, "BRIDGE_DEFER_RECHECK", parse_duration)
    max_defer: float = _setting(60.0, "BRIDGE_MAX_DEFER", parse_duration)
    resume_attempts: int = _setting(2, "BRIDGE_RESUME_ATTEMPTS", _int)
    session_stale: float = _setting(12 * 3600.0, "BRIDGE_SESSION_STALE", parse_duration)
    crash_loop_failures: int = _setting(3, "BRIDGE_CRASH_LOOP_FAILURES", _int)
    crash_loop_window: float = _setting(15 * 60.0, "BRIDGE_CRASH_LOOP_WINDOW", parse_duration)
    trigger_rate_per_min: int = _setting(10, "BRIDGE_TRIGGER_RATE_PER_MIN", _int)
    command_timeout: float = _setting(120.0, "BRIDGE_COMMAND_TIMEOUT", parse_duration)
    enter_delay: float = _setting(0.5, "BRIDGE_ENTER_DELAY", parse_duration)
    spawn_ack_timeout: float = _setting(120.0, "BRIDGE_SPAWN_ACK_TIMEOUT", parse_duration)
    launch_settle: float = _setting(1.0, "BRIDGE_LAUNCH_SETTLE", parse_duration)
    host_id: str = _setting("", "BRIDGE_HOST_ID", _str)  # "": see local_host_id
    tmux_socket: str | None = _setting(None, "BRIDGE_TMUX_SOCKET", _str)
    tmux_session: str | None = _setting(None, "BRIDGE_TMUX_SESSION", _str)
    runtimes_file: str | None = _setting(None, "BRIDGE_RUNTIMES_FILE", _str)
    log_level: str = _setting("INFO", "BRIDGE_LOG_LEVEL", _str)
    mcp_allowed_origins: tuple[str, ...] = _setting((), "BRIDGE_MCP_ALLOWED_ORIGINS", parse_origins)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from flags (`overrides`, None values ignored) over environment over defaults."""
        env = os.environ if env is None else env
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in dataclasses.fields(cls):
            name, env_name = f.name, f.metadata["env"]
            if name in overrides:
                raw, source = overrides[name], f"--{name.replace('_', '-')}"
            elif env_name in env:
                raw, source = env[env_name], env_name
            else:
                continue
            try:
                values[name] = f.metadata["parse"](raw)
            except (TypeError, ValueError) as exc:
                problems.append(f"{source}={raw!r}: {exc}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        problems.extend(f"unknown setting {name!r}" for name in sorted(unknown))
        settings = cls(**values)
        problems.extend(settings._problems())
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems), {"problems": problems})
        return settings

    def _problems(self) -> list[str]:
        from bridge.domain.identifiers import is_identifier

        out = []
        if not 0 <= self.port <= 65535:
            out.append(f"port {self.port} is not in 0..65535")
        if not is_identifier(self.workspace):
            out.append(f"workspace {self.workspace!r} is not a valid identifier")
        if self.token_leeway > 5:
            out.append("token leeway must be at most 5s")
        if self.token_max_ttl <= 0:
            out.append("token max ttl must be positive")
        if self.token_ttl <= 0:
            out.append("token ttl must be positive")
        if self.max_body < 1024:
            out.append("max body must be at least 1KiB")
        if self.max_header < 1024:
            out.append("max header must be at least 1KiB")
        if self.threads < 2:
            out.append("threads must be at least 2")
        if not 0 <= self.processes <= 64:
            out.append("processes must be between 1 and 64 (0: one per two cores)")
        if self.long_poll_per_agent < 1:
            out.append("long poll per agent must be at least 1")
        if not 1 <= self.long_poll_limit < max(2, self.threads):
            out.append(f"long poll total must be at least 1 and below threads ({self.threads}), "
                       "so waits never take every thread")
        if not 1 <= self.request_read_timeout <= 300:
            out.append("request read timeout must be between 1s and 300s")
        if self.busy_timeout < 0.1:
            out.append("busy timeout must be at least 100ms")
        for name in ("write_quota_per_min", "write_burst", "loop_guard_turns", "loop_guard_repeats",
                     "delivery_retries", "resume_attempts", "trigger_rate_per_min", "refusal_audits_per_min",
                     "refusal_audit_burst"):
            if getattr(self, name) < 0:
                out.append(f"{name} must not be negative")
        for name in ("write_batch", "worker_claim_batch", "worker_jobs_per_tick", "crash_loop_failures"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1")
        for name, low, high in _BOUNDED_DURATIONS:
            if not low <= getattr(self, name) <= high:
                out.append(f"{name} must be between {low:g}s and {high:g}s")
        if not is_identifier(self.local_host_id):
            out.append(f"host id {self.local_host_id!r} is not a valid identifier (set BRIDGE_HOST_ID)")
        if self.enter_delay > 5:
            out.append("enter delay must be at most 5s")
        if self.jwks_url is not None and not self.jwks_url.startswith("https://"):
            out.append("jwks url must use https://")
        for name in ("jwks_file", "jwks_ca_file", "runtimes_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                out.append(f"{name.replace('_', ' ')} {value!r} is not a readable file")
        if self.runtimes_file is not None and Path(self.runtimes_file).is_file():
            from bridge.domain.templates import load_templates

            try:
                load_templates(self.runtimes_file)
            except ValueError as exc:
                out.append(f"runtimes file: {exc}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            out.append(f"log level {self.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
        return out

    @property
    def long_poll_limit(self) -> int:
        """Concurrent long-polls allowed in this process: BRIDGE_LONG_POLL_TOTAL, else half the HTTP threads."""
        return self.long_poll_total if self.long_poll_total is not None else max(1, self.threads // 2)

    @property
    def serve_processes(self) -> int:
        """How many processes `bridge serve` runs: BRIDGE_PROCESSES, else one per two cores (the agents the bridge
        serves run on the same machine and need the other half), at most MAX_AUTO_PROCESSES (one SQLite file takes
        one writer at a time: past a few processes, more only add memory)."""
        return self.processes or max(1, min((os.cpu_count() or 1) // 2, MAX_AUTO_PROCESSES))

    @property
    def location(self) -> Location:
        """Where the data lives: a SQLite file or a PostgreSQL database."""
        return parse_location(self.db)

    @property
    def db_path(self) -> Path:
        """The SQLite database file, as an absolute path (a PostgreSQL location has none: ValueError)."""
        path = self.location.path
        if path is None:
            raise ValueError(f"{self.location} is not a database file")
        return path

    @property
    def data_dir(self) -> Path:
        """The directory holding agent folders (and a SQLite bridge's signing key; PostgreSQL keeps its key in the
        database): BRIDGE_DATA_DIR, else next to a SQLite file
        (`bridge.db` -> `bridge.data/`), else for PostgreSQL one per database in the user's data directory
        (`$XDG_DATA_HOME` or `~/.local/share`, then `agent-bridge/<host>-<port>-<database>`)."""
        if self.data:
            return Path(self.data).expanduser().resolve()
        location = self.location
        if location.path is not None:
            return location.path.with_name(location.path.stem + ".data")
        base = Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share").expanduser()
        return base / "agent-bridge" / location.name

    @property
    def local_host_id(self) -> str:
        """The host this process runs on: the runtimes it registers are recorded there, and its worker delivers
        only to runtimes on it (or with no host recorded). BRIDGE_HOST_ID, else the machine's host name."""
        return self.host_id or socket.gethostname()

    @property
    def workspace_tmux_session(self) -> str:
        """The tmux session that holds the windows the bridge launches or spawns."""
        return self.tmux_session or f"bridge-{self.workspace}"

    @property
    def url(self) -> str:
        """The bridge's own base URL (given to spawned agents)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and benchmarks)."""
        return dataclasses.replace(self, **changes)


DEFAULTS = Settings()
"""The defaults above, for code used without loaded settings (a bare `Store` in a test, a token issued in code)."""
