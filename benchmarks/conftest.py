"""Fixtures of the benchmark suite: a real FULL-durability database in tmp_path, real tokens, a live waitress.

Run with `python -m pytest benchmarks --benchmark-only` (the default test run only collects `tests/`). Nothing
here imports from `tests/`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from bridge_ops.load import BODY, READ_SEED, KeepAliveClient

from bridge.auth.tokens import issue_token
from bridge.domain.authz import Principal
from bridge.domain.models import CreateThreadInput, PostMessageInput
from bridge.http.server import make_server, shutdown
from bridge.services import messages, threads
from bridge.services.core import Call
from bridge.settings import Settings
from bridge.wiring import Parts, build

WRITER, READER, COORDINATOR = "bench-writer", "bench-reader", "bench-coordinator"


def call_as(agent_id: str, role: str = "participant") -> Call:
    """A service call by a real principal, as the token verifier would produce it."""
    return Call(Principal(agent_id=agent_id, workspace_id="default", role=role, session_id=f"{agent_id}-bench"),
                request_id="bench")


@dataclass
class Bench:
    """Built parts on a fresh database, a thread to post into, a seeded thread to read from, and their callers."""

    parts: Parts
    post_thread: str
    read_thread: str
    writer: Call
    reader: Call


@pytest.fixture
def bench(tmp_path) -> Iterator[Bench]:
    """Default settings (synchronous=FULL) on a database file in tmp_path; quota and loop guard switched off so a
    benchmark posting thousands of messages measures the write path instead of its refusals."""
    settings = Settings.load({"db": str(tmp_path / "bridge.db"), "synchronous": "FULL", "write_quota_per_min": 0,
                              "loop_guard_turns": 0}, env={})
    parts = build(settings)
    try:
        assert parts.bridge.store.pragmas()["synchronous"] == 2, "benchmarks must run with synchronous=FULL"
        coordinator = call_as(COORDINATOR, "coordinator")
        ids = [threads.create_thread(parts.bridge, coordinator, CreateThreadInput(
            title=title, type="conversation", participants=[WRITER, READER]))["thread_id"]
            for title in ("bench: post", "bench: read")]
        writer = call_as(WRITER)
        for n in range(READ_SEED):
            messages.post_message(parts.bridge, writer, PostMessageInput(
                thread_id=ids[1], schema_version=1, kind="chat", body=f"{BODY} #{n}"))
        yield Bench(parts=parts, post_thread=ids[0], read_thread=ids[1], writer=writer, reader=call_as(READER))
    finally:
        parts.close()


@dataclass
class Live:
    """A live server for `bench` and keep-alive clients holding real tokens."""

    bench: Bench
    port: int
    writer: KeepAliveClient
    reader: KeepAliveClient
    anonymous: KeepAliveClient


@pytest.fixture
def live(bench) -> Iterator[Live]:
    """The real app under waitress on 127.0.0.1 (free port), fully stopped at teardown."""
    parts = bench.parts
    settings = parts.bridge.settings
    server = make_server(parts, host="127.0.0.1", port=0)
    runner = threading.Thread(target=server.run, name="bench-waitress", daemon=True)
    runner.start()
    port = server.effective_port

    def token(agent: str) -> str:
        return issue_token(parts.key, issuer=settings.issuer, audience=settings.audience, agent_id=agent,
                           role="participant", workspace_id=settings.workspace, session_id=f"{agent}-bench",
                           ttl=3600)[0]

    clients: list[KeepAliveClient] = []
    try:
        anonymous = KeepAliveClient("127.0.0.1", port)
        clients.append(anonymous)
        deadline = time.monotonic() + 10
        while True:
            try:
                if anonymous.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        writer, reader = KeepAliveClient("127.0.0.1", port, token(WRITER)), KeepAliveClient("127.0.0.1", port,
                                                                                             token(READER))
        clients += [writer, reader]
        yield Live(bench=bench, port=port, writer=writer, reader=reader, anonymous=anonymous)
    finally:
        for client in clients:
            client.close()
        shutdown(server)
        runner.join(timeout=10)
