"""Shared fixtures: real database files in tmp_path, real signed tokens, a real waitress server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from wakekit import WakeStack, make_wake_stack

from bridge.domain.authz import Principal
from bridge.services.core import Call
from bridge.settings import Settings
from bridge.testing import tmux as harness_tmux
from bridge.testing.inprocess import waitress_thread
from bridge.testing.postgres import PostgresServer
from bridge.testing.stack import Stack
from bridge.testing.tokens import Minter
from bridge.wiring import Parts, build
from bridge.worker.tmux import Tmux

# Test modules of mechanics only SQLite has (the file, its WAL and locks, the apsw writer, file backups): every other
# test that builds a bridge through the fixtures below runs twice, on a SQLite file and on a fresh PostgreSQL database.
SQLITE_ONLY = {
    "test_storage_faults", "test_store", "test_store_writer", "test_durability", "test_seed", "test_ops_scale",
    "test_serve_processes", "test_capacity", "test_thread_digests", "test_pg_schema", "test_postgres_harness",
}
STORES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that uses the `db` fixture (directly or through `settings`, `make_parts`, ...) over
    both stores, unless its module tests SQLite-only mechanics or it is marked `sqlite_only`."""
    if ("db" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] not in SQLITE_ONLY
            and metafunc.definition.get_closest_marker("sqlite_only") is None):
        metafunc.parametrize("db", STORES, indirect=True)


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path) -> str:
    """The `--db` of the test's bridge: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "bridge.db")


def pytest_configure(config: pytest.Config) -> None:
    """A bridge on PostgreSQL keeps its data directory (agent folders) under $XDG_DATA_HOME: one temporary directory
    for the session (children inherit it), so tests never write to the user's home."""
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="bridge-test-data-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("XDG_DATA_HOME", ""), ignore_errors=True)


@pytest.fixture
def settings(db, tmp_path) -> Settings:
    """Default settings on a fresh database (environment ignored)."""
    return Settings.load({"db": db}, env={})


@pytest.fixture
def make_parts(db, tmp_path) -> Iterator[Callable[..., Parts]]:
    """Build bridge parts with setting overrides; every one built is closed at teardown."""
    built: list[Parts] = []

    def factory(**overrides: Any) -> Parts:
        overrides.setdefault("db", db)
        parts = build(Settings.load(overrides, env={}))
        built.append(parts)
        return parts

    yield factory
    for parts in built:
        parts.close()


@pytest.fixture
def parts(make_parts) -> Parts:
    """Bridge parts with default settings on a fresh database file."""
    return make_parts()


def principal(agent_id: str, role: str = "participant", workspace: str = "default",
              session_id: str | None = None) -> Principal:
    """A principal as the verifier would produce it (for unit tests of services)."""
    return Principal(agent_id=agent_id, workspace_id=workspace, role=role, session_id=session_id or f"{agent_id}-s1")


def call_as(agent_id: str, role: str = "participant", **kwargs: Any) -> Call:
    """A service call made by an agent (unit tests)."""
    return Call(principal(agent_id, role, **kwargs), request_id="test")


@pytest.fixture
def make_token(parts) -> Minter:
    """Mint a real EdDSA token with the bridge's local key; `claims=` overrides or removes (None) claims."""
    return Minter(parts.key, parts.bridge.settings)


@dataclass
class Response:
    status: int
    headers: Any
    body: Any

    @property
    def code(self) -> str | None:
        """The error code of an error envelope (None on success)."""
        return self.body.get("error", {}).get("code") if isinstance(self.body, dict) else None


class ApiClient:
    """A tiny HTTP client for the `/v1` API of a live server."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()

    def call(self, command: str, token: str | None, payload: Any = None, **kwargs: Any) -> Response:
        """POST /v1/mcp/<command> with a JSON body (payload dict, or kwargs)."""
        body = payload if payload is not None else kwargs
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = self.session.post(f"{self.base_url}/v1/mcp/{command}", json=body, headers=headers, timeout=60)
        return self._wrap(reply)

    def raw(self, method: str, path: str, **kwargs: Any) -> Response:
        """Any request, for bad-input tests."""
        kwargs.setdefault("timeout", 60)
        return self._wrap(self.session.request(method, f"{self.base_url}{path}", **kwargs))

    @staticmethod
    def _wrap(reply: requests.Response) -> Response:
        try:
            body = reply.json()
        except ValueError:
            body = reply.text
        return Response(reply.status_code, reply.headers, body)

    def ok(self, command: str, token: str, **payload: Any) -> dict[str, Any]:
        """Call and assert success; return the body."""
        reply = self.call(command, token, payload)
        assert reply.status == 200, (command, reply.status, reply.body)
        return reply.body


@dataclass
class LiveServer:
    url: str
    parts: Parts
    client: ApiClient


@pytest.fixture
def serve_parts() -> Iterator[Callable[[Parts], LiveServer]]:
    """Serve any parts with the real app under waitress on 127.0.0.1 (free port); all stopped at teardown."""
    with contextlib.ExitStack() as running:
        def start(parts: Parts) -> LiveServer:
            url = f"http://127.0.0.1:{running.enter_context(waitress_thread(parts))}"
            client = ApiClient(url)
            running.callback(client.session.close)
            return LiveServer(url=url, parts=parts, client=client)

        yield start


@pytest.fixture
def live_server(parts, serve_parts) -> LiveServer:
    """The real app for the default parts under waitress on 127.0.0.1."""
    return serve_parts(parts)


@pytest.fixture
def api(live_server) -> ApiClient:
    """The client of the live server."""
    return live_server.client


@pytest.fixture
def private_tmux() -> Iterator[Tmux]:
    """A tmux server on a private socket (`tmux -L bridge-test-…`), killed at teardown with every pane process."""
    tmux = harness_tmux.private_tmux()
    yield tmux
    harness_tmux.stop_tmux(tmux)


@pytest.fixture
def harness(tmp_path, db) -> Iterator[Stack]:
    """The harness `Stack` in tmp_path on the test's database (the `parts` fixture's) with no timing overrides:
    real `bridge serve` processes; everything it started is stopped by PID at teardown."""
    with Stack(tmp_path, timings={}, db=db) as running:
        yield running


@pytest.fixture
def wake_stack(tmp_path, make_parts, serve_parts, private_tmux) -> Iterator[Callable[..., WakeStack]]:
    """Factory: a live bridge with fast wake timings, the stand-in runtime, a supervisor and a private tmux."""
    stacks: list[WakeStack] = []

    def build_stack(**overrides: Any) -> WakeStack:
        stack = make_wake_stack(tmp_path, make_parts, serve_parts, private_tmux, **overrides)
        stacks.append(stack)
        return stack

    yield build_stack
    for stack in stacks:
        stack.stop_worker()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole test session (its own temp dir), stopped by PID at the end."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a fresh empty database on the session's PostgreSQL server, dropped after the test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url.rsplit("/", 1)[1])
