"""Fixtures of the benchmark suite: a real FULL-durability database in tmp_path, real tokens, a live waitress.

Run with `python -m pytest benchmarks --benchmark-only` (the default test run only collects `tests/`). Nothing
here imports from `tests/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from bridge_ops.load import BODY, READ_SEED

from bridge.domain.authz import Principal
from bridge.domain.models import CreateThreadInput, PostMessageInput
from bridge.services import messages, threads
from bridge.services.core import Call
from bridge.settings import Settings
from bridge.testing.client import Client
from bridge.testing.inprocess import waitress_thread
from bridge.testing.processes import wait_until
from bridge.testing.tokens import Minter
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


def headers(token: str) -> dict[str, str]:
    """The request headers of a JSON call with this bearer token (built once: `Client.raw` is the lean path)."""
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@dataclass
class Live:
    """A live server for `bench`, keep-alive clients, and the headers carrying real tokens of the writer and reader."""

    bench: Bench
    port: int
    writer: Client
    reader: Client
    anonymous: Client
    writer_headers: dict[str, str]
    reader_headers: dict[str, str]


@pytest.fixture
def live(bench) -> Iterator[Live]:
    """The real app under waitress on 127.0.0.1 (free port), fully stopped at teardown."""
    mint = Minter(bench.parts.key, bench.parts.bridge.settings)
    with waitress_thread(bench.parts) as port, Client(port) as anonymous, Client(port) as writer, \
            Client(port) as reader:
        if not wait_until(lambda: anonymous.get("/health").ok, 10, 0.02):
            raise RuntimeError("the benchmark server did not answer GET /health")
        yield Live(bench=bench, port=port, writer=writer, reader=reader, anonymous=anonymous,
                   writer_headers=headers(mint(WRITER, session_id=f"{WRITER}-bench")),
                   reader_headers=headers(mint(READER, session_id=f"{READER}-bench")))
