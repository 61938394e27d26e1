"""Fair use of server capacity over real HTTP to a real waitress server on 127.0.0.1 (SPEC §7, §8).

Long-polls never take every request thread: concurrent waits are capped per agent and in total, and a wait past a
cap answers at once with a `wait` hint. A crowd of clients trickling header bytes cannot hold the connection slots:
a request must arrive within the read deadline, and at the connection limit the longest-waiting idle or slow
connection makes room for a new one.

The capacity settings are given through the environment mapping, so an older bridge that does not know them
still starts (and shows what goes wrong without them). Every wait in these tests is bounded by a client timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from bridge.errors import ConfigError
from bridge.http.server import make_server, shutdown
from bridge.settings import Settings
from bridge.testing.client import metric
from bridge.testing.tokens import Minter
from bridge.wiring import Parts, build

THREADS = 6
PER_AGENT = 2
TOTAL = 3
CAPACITY_ENV = {"BRIDGE_LONG_POLL_PER_AGENT": str(PER_AGENT), "BRIDGE_LONG_POLL_TOTAL": str(TOTAL),
                "BRIDGE_REQUEST_READ_TIMEOUT": "1s"}
LONG_WAIT_MS = 30_000  # what a client asks for; a held wait is released by posting a message
BOUND = 8.0  # client-side bound for anything that must answer promptly (the waits asked for are 30 s)
AGENTS = ("rev", "exec", "third")


@dataclass
class Stack:
    url: str
    parts: Parts
    tokens: dict[str, str]
    thread_id: str

    def call(self, command: str, agent: str, timeout: float = BOUND, **payload: Any) -> dict[str, Any]:
        """POST a command on a fresh connection; assert 200 and return the body."""
        reply = requests.post(f"{self.url}/v1/mcp/{command}", json=payload, timeout=timeout,
                              headers={"Authorization": f"Bearer {self.tokens[agent]}"})
        assert reply.status_code == 200, (command, reply.status_code, reply.text)
        body: dict[str, Any] = reply.json()
        return body

    def long_poll(self, agent: str, command: str = "read_messages") -> dict[str, Any]:
        extra = {"thread_id": self.thread_id} if command == "read_messages" else {}
        return self.call(command, agent, timeout=LONG_WAIT_MS / 1000 + 10, wait_ms=LONG_WAIT_MS, **extra)

    def post(self, agent: str, body: str) -> dict[str, Any]:
        return self.call("post_message", agent, thread_id=self.thread_id, schema_version=1, kind="chat", body=body)

    def waiting(self) -> int:
        """Long-polls waiting inside the store right now (any version of the bridge counts them there)."""
        return int(self.parts.bridge.store._waiters)


@pytest.fixture
def start_stack(tmp_path) -> Iterator[Callable[..., Stack]]:
    """Factory: a bridge with small capacity settings served by waitress on 127.0.0.1 (server overrides allowed)."""
    running: list[tuple[Any, threading.Thread, Parts]] = []

    def start(env: dict[str, str] | None = None, **server_overrides: Any) -> Stack:
        settings = Settings.load({"db": str(tmp_path / "bridge.db"), "threads": THREADS},
                                 env={**CAPACITY_ENV, **(env or {})})
        parts = build(settings)
        server = make_server(parts, host="127.0.0.1", port=0, **server_overrides)
        thread = threading.Thread(target=server.run, name="waitress", daemon=True)
        thread.start()
        running.append((server, thread, parts))
        url = f"http://127.0.0.1:{server.effective_port}"
        minter = Minter(parts.key, parts.bridge.settings)
        tokens = {a: minter(a) for a in AGENTS}
        tokens["coord"] = minter("coord", "coordinator")
        stack = Stack(url, parts, tokens, "")
        stack.thread_id = stack.call("create_thread", "coord", title="Capacity", type="workflow",
                                     participants=list(AGENTS))["thread_id"]
        return stack

    yield start
    for server, thread, parts in running:
        parts.close()  # releases any wait still held, so the task threads can stop
        shutdown(server)
        thread.join(timeout=10)


def settle(check: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    """Poll (bounded) until `check()` holds."""
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def held_waits(stack: Stack, agents: list[str]) -> Iterator[list[Future[dict[str, Any]]]]:
    """Start one 30 s long-poll per entry of `agents`; on exit release them with a message and collect them."""
    with ThreadPoolExecutor(max_workers=len(agents)) as pool:
        futures = [pool.submit(stack.long_poll, agent) for agent in agents]
        try:
            yield futures
        finally:
            with contextlib.suppress(Exception):
                stack.post("third", "release the waits")


def assert_refused(body: dict[str, Any], reason: str) -> None:
    hint = body["wait"]
    assert hint["honoured"] is False and hint["reason"] == reason, body
    assert isinstance(hint["retry_after_ms"], int) and hint["retry_after_ms"] > 0, body


# --------------------------------------------------------------------------------------------- settings
def test_capacity_settings_default_relative_to_threads_and_are_validated(tmp_path):
    db = str(tmp_path / "bridge.db")
    defaults = Settings.load({"db": db, "threads": 32}, env={})
    assert (defaults.long_poll_per_agent, defaults.long_poll_limit, defaults.request_read_timeout) == (4, 16, 10.0)
    assert Settings.load({"db": db, "threads": 8}, env={}).long_poll_limit == 4
    with pytest.raises(ConfigError) as refused:
        Settings.load({"db": db, "threads": 32}, env={"BRIDGE_LONG_POLL_PER_AGENT": "0", "BRIDGE_LONG_POLL_TOTAL": "32",
                                                     "BRIDGE_REQUEST_READ_TIMEOUT": "500ms"})
    problems = refused.value.details["problems"]
    assert len(problems) == 3, problems
    assert any("long poll per agent" in p for p in problems)
    assert any("long poll total" in p for p in problems)
    assert any("request read timeout" in p for p in problems)


# --------------------------------------------------------------------------------------------- long-poll caps
def test_waits_past_the_agent_cap_answer_at_once_with_a_hint(start_stack):
    stack = start_stack()
    with held_waits(stack, ["rev"] * PER_AGENT) as held:
        settle(lambda: stack.waiting() == PER_AGENT, "the agent's waits are held")
        extra = stack.call("read_messages", "rev", thread_id=stack.thread_id, wait_ms=LONG_WAIT_MS)
        assert_refused(extra, "agent_long_poll_limit")
        assert extra["messages"] == [] and extra["next_seq"] == 0 and extra["has_more"] is False
        assert (extra["latest_seq"], extra["unread_count"]) == (0, 0)
        inbox = stack.call("inbox", "rev", wait_ms=LONG_WAIT_MS)
        assert_refused(inbox, "agent_long_poll_limit")
        assert inbox["threads"] == []
        other = stack.call("read_messages", "exec", thread_id=stack.thread_id, wait_ms=1)
        assert "wait" not in other  # another agent still gets its wait (it times out normally)
        posted = stack.post("exec", "hello")
        for future in held:  # the held waits were honoured: they return the message
            body = future.result(timeout=BOUND)
            assert [m["seq"] for m in body["messages"]] == [posted["seq"]] and "wait" not in body
    metrics = requests.get(f"{stack.url}/metrics", timeout=BOUND).text
    assert 'bridge_long_poll_refused_total{reason="agent_long_poll_limit"} 2.0' in metrics


def test_waits_past_the_server_cap_answer_at_once_with_a_hint(start_stack):
    stack = start_stack()
    holders = ["rev"] * PER_AGENT + ["exec"] * (TOTAL - PER_AGENT)
    with held_waits(stack, holders):
        settle(lambda: stack.waiting() == TOTAL, "the server's waits are held")
        extra = stack.call("read_messages", "third", thread_id=stack.thread_id, wait_ms=LONG_WAIT_MS)
        assert_refused(extra, "server_long_poll_limit")
        assert extra["messages"] == []
        assert_refused(stack.call("inbox", "third", wait_ms=LONG_WAIT_MS), "server_long_poll_limit")
        # a call that needs no wait (there is something to read) is answered normally, cap or not
        posted = stack.post("third", "news")
        ready = stack.call("read_messages", "third", thread_id=stack.thread_id, since_seq=0, wait_ms=LONG_WAIT_MS)
        assert [m["seq"] for m in ready["messages"]] == [posted["seq"]] and "wait" not in ready


def test_one_agent_flooding_long_polls_leaves_short_requests_answering(start_stack):
    stack = start_stack()
    flood = THREADS + 2  # more long-polls than the server has threads
    with ThreadPoolExecutor(max_workers=flood) as pool:
        futures = [pool.submit(stack.long_poll, "rev") for _ in range(flood)]
        # settled: every thread is waiting, or every call is either waiting or answered
        settle(lambda: stack.waiting() + sum(f.done() for f in futures) >= THREADS, "the flood settled")
        health = requests.get(f"{stack.url}/health", timeout=BOUND)
        assert health.status_code == 200
        posted = stack.post("exec", "still answering")  # bounded by the client timeout
        bodies = [f.result(timeout=BOUND) for f in futures]
    refused = [b for b in bodies if "wait" in b]
    honoured = [b for b in bodies if "wait" not in b]
    assert len(honoured) == PER_AGENT and len(refused) == flood - PER_AGENT
    for body in refused:
        assert_refused(body, "agent_long_poll_limit")
    for body in honoured:
        assert [m["seq"] for m in body["messages"]] == [posted["seq"]]


# --------------------------------------------------------------------------------------------- slow clients
def open_trickler(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    sock.sendall(b"POST /v1/mcp/inbox HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Send one more header byte; True when the server has closed the connection."""
    try:
        sock.sendall(b"x")
        sock.settimeout(0.2)
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def test_a_trickling_or_silent_connection_is_closed_after_the_read_deadline(start_stack):
    stack = start_stack()
    port = int(stack.url.rsplit(":", 1)[1])
    trickler = open_trickler(port)
    silent = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    try:
        settle(lambda: closed_by_server(trickler), "the trickler was closed")
        silent.settimeout(BOUND)
        assert silent.recv(1024) == b""  # closed (bounded by the socket timeout)
    finally:
        trickler.close()
        silent.close()
    # a request that arrives in pieces within the deadline is still served
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(0.3)
        sock.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")


def test_a_crowd_of_header_tricklers_does_not_lock_out_a_normal_request(start_stack):
    """At the connection limit the longest-waiting slow connection makes room (the read deadline is set far
    beyond the client's bound here, so only that can let the normal requests in)."""
    limit = 20
    stack = start_stack(env={"BRIDGE_REQUEST_READ_TIMEOUT": "60s"}, connection_limit=limit)
    port = int(stack.url.rsplit(":", 1)[1])
    stop = threading.Event()
    opened = threading.Semaphore(0)

    def trickle() -> None:
        """Keep one slow connection open, reconnecting whenever the server closes it."""
        while not stop.is_set():
            try:
                sock = open_trickler(port)
            except OSError:
                continue
            opened.release()
            with sock:
                while not stop.is_set():
                    try:
                        sock.sendall(b"x")
                    except OSError:
                        break
                    stop.wait(0.2)

    crowd = [threading.Thread(target=trickle, daemon=True) for _ in range(2 * limit)]
    for t in crowd:
        t.start()
    try:
        for _ in crowd:  # every trickler has connected once (the kernel accepts past waitress's limit)
            assert opened.acquire(timeout=BOUND)
        for _ in range(3):
            health = requests.get(f"{stack.url}/health", timeout=BOUND)
            assert health.status_code == 200
            assert stack.post("exec", "got in")["seq"] > 0
        metrics = requests.get(f"{stack.url}/metrics", timeout=BOUND).text
        evicted = metric(metrics, "bridge_connections_dropped_total", reason="evicted")
        assert evicted is not None and evicted >= 1, "the limit was never reached"
    finally:
        stop.set()
        for t in crowd:
            t.join(timeout=BOUND)


def test_sigterm_ends_serve_promptly_with_idle_keep_alive_connections_and_long_polls_open(tmp_path, harness):
    """A stopping server closes idle kept-alive connections and answers its long-polls with what they have; before,
    one idle connection (an agent's MCP client) held `bridge serve` after SIGTERM until it was killed."""
    db = tmp_path / "stop.db"
    server = harness.serve("stop", worker=True, db=db)
    token = Minter.for_db(db)("rev", "coordinator")
    headers = {"Authorization": f"Bearer {token}"}
    with requests.Session() as idle:  # one request, then the connection stays open (keep-alive)
        assert idle.get(f"{server.url}/health", timeout=BOUND).status_code == 200
        thread_id = idle.post(f"{server.url}/v1/mcp/create_thread", headers=headers, timeout=BOUND, json={
            "title": "stop", "type": "workflow", "participants": ["rev"]}).json()["thread_id"]
        with ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(requests.post, f"{server.url}/v1/mcp/read_messages", headers=headers,
                                  json={"thread_id": thread_id, "wait_ms": LONG_WAIT_MS}, timeout=BOUND * 5)
            time.sleep(0.5)  # the long-poll is waiting
            assert not waiting.done()
            assert server.stop(timeout=BOUND) == 0, server.log_text()
            answer = waiting.result(timeout=BOUND)
    assert answer.status_code == 200 and answer.json()["messages"] == []
    assert "Traceback" not in server.log_text()
