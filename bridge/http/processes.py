"""`bridge serve --processes N`: one listening socket served by N forked processes on one database.

The parent binds the socket and migrates the database, then forks N serving processes and only looks after them.
Each opens its own store (group commit per process; SQLite's write lock orders the processes), serves the shared
socket with waitress (the kernel hands each new connection to one of them) and runs a worker that ticks only while
it holds the database lease (bridge/worker/supervisor.py). Commits are announced between them (bridge/http/peers.py),
so a long-poll in one process wakes at once when another process commits.

The parent forwards SIGTERM/SIGINT to every process and waits for them (SIGKILL after `STOP_TIMEOUT`); a process that
dies is restarted in its slot unless processes keep dying (`RESTARTS` within `RESTART_WINDOW` seconds: then all stop
and the parent exits 1). The serving processes die with the parent (PR_SET_PDEATHSIG on Linux), so `kill -9` of the
parent's PID stops the whole server, as it would a single process. Prometheus counters are kept in files of a
temporary directory (prometheus-client's multiprocess mode), so `/metrics` of any process reports them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable

from bridge.http.peers import CommitPeers
from bridge.settings import Settings

log = logging.getLogger("bridge.http")
READY_TIMEOUT = 60.0  # seconds for every process to open the database and start serving
STOP_TIMEOUT = 20.0
RESTARTS, RESTART_WINDOW = 5, 60.0
_PR_SET_PDEATHSIG = 1


def listen(host: str, port: int) -> socket.socket:
    """The listening socket every serving process shares (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def serve_processes(settings: Settings, count: int, *, with_worker: bool,
                    on_start: Callable[[str, int], None]) -> int:
    """Serve with `count` processes until SIGTERM/SIGINT; the exit code (0, or 1 when processes kept dying).

    `on_start(host, port)` runs once every process serves. The database must exist at the current schema, and the
    caller must have no thread running or database open in this process (they would not survive the fork)."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the fork: its counters would not be shared")
    sock = listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    metrics_dir = tempfile.mkdtemp(prefix="bridge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # every process's counters in files, summed at scrape
    import bridge.http.server  # noqa: F401  (imported once here: the forked processes share it, and start sooner)
    group = _Group(settings.replace(port=port, processes=count), sock, CommitPeers(count), with_worker)
    try:
        signal.signal(signal.SIGTERM, group.stop)
        signal.signal(signal.SIGINT, group.stop)
        if group.start_all(count):
            on_start(host, port)
        return group.supervise()
    finally:
        sock.close()
        group.peers.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Group:
    """The serving processes, by slot: started, restarted when one dies, stopped together."""

    def __init__(self, settings: Settings, sock: socket.socket, peers: CommitPeers, with_worker: bool):
        self.settings, self.sock, self.peers, self.with_worker = settings, sock, peers, with_worker
        self.parent = os.getpid()
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.failed = False

    def start(self, slot: int, ready: tuple[int, int] | None = None) -> None:
        """Fork the process of `slot`; `ready`: the pipe it reports on once serving (first start only). SIGTERM and
        SIGINT are held during the fork, so the new process never runs the parent's handlers."""
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        pid = os.fork()
        if pid == 0:
            for signum in stops:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            if ready is not None:
                os.close(ready[0])
            _serve_slot(self.parent, slot, self.sock, self.settings, self.peers, self.with_worker,
                        None if ready is None else ready[1])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        self.children[pid] = slot

    def start_all(self, count: int) -> bool:
        """Start every slot; whether all of them serve (else they are being stopped and the exit code is 1)."""
        ready = os.pipe()
        for slot in range(count):
            self.start(slot, ready)
        os.close(ready[1])
        try:
            if _await_ready(ready[0], count, self.children):
                return True
        finally:
            os.close(ready[0])
        if not self.stopping:
            self.failed = True
            self.stop()
        return False

    def stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        """SIGTERM to every process (the signal handler, and after a failure)."""
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def supervise(self) -> int:
        """Reap processes until none is left, restarting those that die unless stopping; the exit code."""
        deaths: list[float] = []
        stop_deadline = None
        while self.children:
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self.stopping and stop_deadline is None:
                    stop_deadline = time.monotonic() + STOP_TIMEOUT
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    for late in self.children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(late, signal.SIGKILL)
                time.sleep(0.05)
                continue
            slot = self.children.pop(pid, None)
            if slot is None or self.stopping:
                continue
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
            if len(deaths) > RESTARTS:
                log.error("serving processes keep dying: stopping", extra={"event": "serve_crash_loop"})
                self.failed = True
                self.stop()
                continue
            log.warning("a serving process exited: starting another",
                        extra={"event": "serve_process_restarted", "pid": pid, "slot": slot})
            self.start(slot)
        return 1 if self.failed else 0


def _await_ready(ready_read: int, count: int, children: dict[int, int]) -> bool:
    """Whether every process reported it serves (one byte each) before the timeout, none dying first (a dead one
    is reaped and taken out of `children`)."""
    deadline = time.monotonic() + READY_TIMEOUT
    ready = 0
    while ready < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([ready_read], [], [], min(remaining, 0.5))
        if readable:
            got = os.read(ready_read, count)
            if not got:  # every process closed its end: some died before serving
                return False
            ready += len(got)
        else:
            dead = [pid for pid in list(children) if os.waitpid(pid, os.WNOHANG)[0]]
            for pid in dead:
                children.pop(pid)
            if dead:
                return False
    return True


def _serve_slot(parent: int, slot: int, sock: socket.socket, settings: Settings, peers: CommitPeers,
                with_worker: bool, ready: int | None) -> None:
    """In a forked process: serve until told to stop, then exit without returning into the parent's code. `ready`:
    the pipe to report on once serving (None for a restarted process)."""
    code = 1
    try:
        _die_with(parent)
        from bridge.http.server import serve_forever
        from bridge.wiring import build

        peers.join(slot)
        parts = build(settings)
        try:
            serve_forever(parts, sock=sock, peers=peers, with_worker=with_worker,
                          on_start=None if ready is None else lambda server: os.write(ready, b"r"))
        finally:
            parts.close()
        code = 0
    except BaseException:
        log.exception("serving process failed", extra={"event": "serve_process_failed", "slot": slot})
    finally:
        logging.shutdown()
        os._exit(code)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the parent dies (Linux); exit at once if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
