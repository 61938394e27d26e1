"""`bridge serve --processes 2`: two forked processes on one port and one database file, as users run it.

Which process answers a connection is the kernel's choice; `/health` names it (`pid`), so each test opens
connections until it holds one to each process."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.testing.client import Client, metric, new_thread, post, read_thread
from bridge.testing.processes import children, pid_alive, wait_until
from bridge.testing.stack import NO_LIMITS, Stack

TEAM = ["rev", "exec"]


def one_per_process(stack: Stack, token: str, count: int = 2, within: float = 20.0) -> dict[int, Client]:
    """Keep-alive clients, one connected to each serving process (keyed by its pid). Which process accepts is the
    kernel's choice, and on a busy machine one process can win many times in a row: keep trying (pausing a little,
    so the other gets to wait in accept too) until `within` seconds have passed."""
    found: dict[int, Client] = {}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found:
            time.sleep(0.02)
        client = connect(stack, token)
        pid = client.get("/health").body["pid"]
        if pid in found:
            client.close()
        else:
            found[pid] = client
        if len(found) == count:
            return found
    raise AssertionError(f"connections reached only {sorted(found)}")


def listening(port: int) -> bool:
    """Whether any socket listens on this TCP port (/proc/net/tcp: state 0A). Neither a connect (which can reach
    itself on a free ephemeral port) nor a bind (which an outgoing connection's port can block) says so reliably."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


OPEN: list[Client] = []


def connect(stack: Stack, token: str) -> Client:
    """A keep-alive client of the server, closed after the test."""
    OPEN.append(stack.client(token))
    return OPEN[-1]


@pytest.fixture
def stack(tmp_path):
    with Stack(tmp_path, env=NO_LIMITS) as running:
        yield running
        while OPEN:
            OPEN.pop().close()


def test_two_processes_serve_one_port_and_one_database(stack):
    server = stack.serve("server", "--processes", "2")
    forked = children(server.pid)
    assert len(forked) == 2 and all(pid_alive(pid) for pid in forked)
    clients = one_per_process(stack, stack.token("rev"))
    assert sorted(clients) == sorted(forked)
    coordinator = connect(stack, stack.token("coord", "coordinator"))
    thread_id = new_thread(coordinator, TEAM)
    seqs: list[int] = []
    lock = threading.Lock()

    def write(client: Client, label: int) -> None:
        for i in range(25):
            result = post(client, thread_id, f"{label}-{i}")
            with lock:
                seqs.append(result["seq"])

    writers = [threading.Thread(target=write, args=(client, pid)) for pid, client in clients.items()]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert sorted(seqs) == list(range(1, 51))  # gapless and unique across both processes
    for client in clients.values():  # each process reads every message, whoever wrote it
        assert [m["seq"] for m in read_thread(client, thread_id)] == list(range(1, 51))
    text = next(iter(clients.values())).get("/metrics").body
    assert metric(text, "bridge_messages_posted_total") == 50  # counted by both, reported by either


def test_a_long_poll_wakes_for_a_message_another_process_committed(stack):
    stack.serve("server", "--processes", "2")
    coordinator = connect(stack, stack.token("coord", "coordinator"))
    thread_id = new_thread(coordinator, TEAM)
    readers = one_per_process(stack, stack.token("rev"))
    writers = one_per_process(stack, stack.token("exec"))
    probes = one_per_process(stack, stack.token("coord", "coordinator"))
    for reader_pid, reader in readers.items():
        writer = next(client for pid, client in writers.items() if pid != reader_pid)
        answer: dict[str, Any] = {}
        latest = coordinator.ok("get_thread", {"thread_id": thread_id})["latest_seq"]

        def wait(reader: Client = reader, since: int = latest, into: dict[str, Any] = answer) -> None:
            into.update(reader.ok("read_messages", {"thread_id": thread_id, "since_seq": since,
                                                    "wait_ms": 20_000}))

        waiting = threading.Thread(target=wait)
        waiting.start()
        probe = probes[reader_pid]
        assert wait_until(lambda probe=probe: metric(probe.get("/metrics").body, "bridge_long_polls_waiting") == 1,
                          10)
        post(writer, thread_id, f"for the reader in {reader_pid}")
        waiting.join(15)  # far below the 20 s wait: it answered because the other process committed
        assert not waiting.is_alive()
        assert [m["body"] for m in answer["messages"]] == [f"for the reader in {reader_pid}"]


def test_the_write_quota_holds_across_processes(stack):
    stack.serve("server", "--processes", "2", env={"BRIDGE_WRITE_QUOTA_PER_MIN": "1", "BRIDGE_WRITE_BURST": "3"})
    coordinator = connect(stack, stack.token("coord", "coordinator"))
    thread_id = new_thread(coordinator, TEAM)
    clients = list(one_per_process(stack, stack.token("rev")).values())
    statuses = [clients[i % 2].call("post_message", {"thread_id": thread_id, "schema_version": 1, "kind": "chat",
                                                     "body": f"post {i}"}).status for i in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert stack.query("SELECT COUNT(*) FROM messages WHERE thread_id = ?", (thread_id,)) == [(3,)]


def test_one_worker_is_elected_and_another_takes_over_when_it_dies(stack):
    stack.standin_runtimes()
    server = stack.serve("server", "--processes", "2", worker=True, env={"BRIDGE_LEADER_LEASE": "1s"})
    lease = "SELECT holder, fencing FROM leases WHERE name LIKE 'worker:default@%' AND expires_at > ?"

    def holder() -> tuple[str, int] | None:
        rows = stack.query(lease, (int(time.time() * 1000),))
        return (rows[0][0], rows[0][1]) if rows else None

    first = wait_until(holder, 15)
    assert first is not None
    leader_pid = int(first[0].split("-")[1])
    assert leader_pid in children(server.pid)
    os.kill(leader_pid, signal.SIGKILL)  # the leading process crashes
    second = wait_until(lambda: (h := holder()) is not None and h[0] != first[0] and h, 15)
    assert second and second[1] == first[1] + 1  # taken over, with the next fencing number
    assert wait_until(lambda: len([p for p in children(server.pid) if pid_alive(p)]) == 2, 15)  # slot refilled

    stack.launch_standin("rev")  # the new leader wakes an idle agent: it reads and acknowledges
    coordinator = connect(stack, stack.token("coord", "coordinator"))
    thread_id = new_thread(coordinator, TEAM)
    post(connect(stack, stack.token("exec")), thread_id, "please look", to=["rev"])
    cursor = "SELECT last_read_seq FROM read_cursors WHERE thread_id = ? AND agent_id = 'rev'"
    assert wait_until(lambda: stack.query(cursor, (thread_id,)) == [(1,)], 30), stack.tmux.capture(stack.panes["rev"])


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_the_parent_stops_every_serving_process(stack, how):
    server = stack.serve("server", "--processes", "2")
    forked = children(server.pid)
    port = int(server.url.rsplit(":", 1)[1])
    if how == "SIGTERM":
        assert server.stop() == 0
    else:
        server.kill9()
    assert wait_until(lambda: not any(pid_alive(pid) for pid in forked), 15), forked
    assert wait_until(lambda: not listening(port), 10)  # the kernel may release the socket just after the exit
