"""Abuse: one agent (or one client) misbehaving while others work, against a real `bridge serve` on 127.0.0.1.

Three loads, each on its own server with the default configuration, each bounded by a count and a time:

- write flood: one agent posts back to back from several connections; its quota must answer 429 (with
  Retry-After, in the envelope) while other agents' posts, paced and within their own quotas, stay fast.
- long-poll hogging: one agent holds 2 x BRIDGE_THREADS `read_messages` long-polls (wait_ms=30000) from one token,
  re-issuing each as soon as it returns, while other agents post and `/health` is probed.
- slow connections: connection-limit + 2 sockets trickle one header byte per second while normal requests, each
  on a new connection, are made.

The figures are the other agents' latencies (p50/p99 ms), their timeouts and failures, measured client-side; the
abuser's own outcome (429s, waits honoured or answered at once, slow sockets dropped) is reported next to them.
The flooder and the hog run in a process of their own (spawned, stopped and joined here, killed by PID if it
hangs). Every thread and socket started here is joined or closed before the server is stopped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.hostile import Answer, Server, Wire, envelope_problem, serve

from bridge.testing.client import new_thread
from bridge.testing.processes import HOST
from bridge.testing.stats import percentile

AREA = "abuse"
P99_TARGET_MS = 1000.0
REQUEST_TIMEOUT = 5.0  # a normal request not answered in this time counts as a timeout
PACE = 0.1  # seconds between two normal requests
PER_VICTIM = 25  # posts per victim agent: below the default write burst (30), so a victim never meets its quota
FLOOD_CONNECTIONS = 4
LONG_POLL_MS = 30_000
SLOW_SECONDS = 12.0  # normal requests are spread over at least this long while the slow sockets trickle


# --------------------------------------------------------------------------------------------------- measuring
@dataclass
class Timings:
    """Latencies of one kind of normal request, and what went wrong."""

    latencies: list[float] = field(default_factory=list)  # ms of answered requests
    timeouts: int = 0
    failures: int = 0  # answered, but not with the expected status, or the connection failed
    attempted: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, expected: int, outcome: tuple[Answer | Exception, float]) -> None:
        answer, ms = outcome
        self.attempted += 1
        if isinstance(answer, TimeoutError | socket.timeout):
            self.timeouts += 1
        elif isinstance(answer, Exception):
            self.failures += 1
            self._note(f"{type(answer).__name__}: {answer}")
        else:
            self.latencies.append(ms)
            if answer.status != expected:
                self.failures += 1
                self._note(f"{answer.status} {answer.body[:120]!r}")

    def _note(self, text: str) -> None:
        if len(self.examples) < 3:
            self.examples.append(text)

    def p(self, q: float) -> float:
        return round(percentile(sorted(self.latencies), q), 1) if self.latencies else math.nan


def request(port: int, method: str, path: str, payload: dict[str, Any] | None = None, token: str | None = None,
            timeout: float = REQUEST_TIMEOUT) -> tuple[Answer | Exception, float]:
    """One request on a new connection: (answer or the exception, elapsed ms)."""
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(payload).encode() if payload is not None else None
    started = time.perf_counter()
    with Wire(port, timeout) as wire:
        try:
            answer: Answer | Exception = wire.send(method, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            answer = exc
    return answer, (time.perf_counter() - started) * 1000


class Victims:
    """Other agents posting to their thread at a steady pace, each within its own write quota."""

    def __init__(self, server: Server, thread_id: str, prefix: str = "victim"):
        self.server, self.thread_id, self.prefix = server, thread_id, prefix
        self.tokens: dict[int, str] = {}
        self.sent = 0

    @staticmethod
    def agents(prefix: str, posts: int) -> list[str]:
        return [f"{prefix}-{i}" for i in range(max(1, math.ceil(posts / PER_VICTIM)))]

    def post(self) -> tuple[Answer | Exception, float]:
        index = self.sent // PER_VICTIM
        if index not in self.tokens:
            self.tokens[index] = self.server.stack.token(f"{self.prefix}-{index}")
        self.sent += 1
        return request(self.server.port, "POST", "/v1/mcp/post_message", {
            "thread_id": self.thread_id, "schema_version": 1, "kind": "chat", "body": f"normal post {self.sent}",
            "idempotency_key": f"{self.prefix}-{self.sent}"}, self.tokens[index])


def paced(count: int, deadline: float, step: Callable[[int], None], pace: float = PACE) -> None:
    """Call `step(i)` for i < count, `pace` seconds apart, until the count or the deadline is reached."""
    for i in range(count):
        if time.monotonic() > deadline:
            return
        started = time.monotonic()
        step(i)
        time.sleep(max(0.0, pace - (time.monotonic() - started)))


@contextlib.contextmanager
def background(targets: list[Callable[[threading.Event], None]], join_timeout: float) -> Iterator[threading.Event]:
    """Run each target in a thread, given the stop event; on exit set the event and join them (bounded)."""
    stop = threading.Event()
    threads = [threading.Thread(target=t, args=(stop,), name=f"abuse-{i}", daemon=True)
               for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        deadline = time.monotonic() + join_timeout
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))


def _latency_figures(what: str, timings: Timings, planned: int) -> list[Figure]:
    served = timings.attempted - timings.timeouts - timings.failures
    return [
        Figure(AREA, f"{what}: served", served, planned, f"{planned} of {planned}", served == planned,
               note=f"attempted {timings.attempted} in the time bound; failed {timings.failures}: "
                    + "; ".join(timings.examples)),
        Figure(AREA, f"{what}: p50", timings.p(50), None, "reported", bool(timings.latencies), unit="ms"),
        Figure(AREA, f"{what}: p99", timings.p(99), None, f"< {P99_TARGET_MS:g} ms",
               bool(timings.latencies) and timings.p(99) < P99_TARGET_MS, unit="ms"),
        Figure(AREA, f"{what}: timeouts ({REQUEST_TIMEOUT:g} s)", timings.timeouts, timings.attempted, "0",
               timings.timeouts == 0 and timings.attempted > 0),
    ]


def _threads(server: Server, coordinator: str, specs: dict[str, list[str]]) -> dict[str, str]:
    with server.stack.client(coordinator) as client:
        return {name: new_thread(client, participants, name) for name, participants in specs.items()}


# --------------------------------------------------------------------------------------------------- the abuser
@dataclass
class Flood:
    """The flooder's own outcome."""

    statuses: Counter[int] = field(default_factory=Counter)
    bad_429: int = 0  # 429 answers without Retry-After or outside the envelope
    seconds: float = 0.0  # how long it flooded

    def record(self, answer: Answer | None, seconds: float) -> None:
        self.statuses[answer.status if answer else 0] += 1
        if answer is not None and answer.status == 429 and not _proper_429(answer):
            self.bad_429 += 1


@dataclass
class Hog:
    """The long-poll hog's own outcome."""

    issued: int = 0
    held: int = 0  # answered after waiting at least a second
    at_once: int = 0  # answered within a second (a cap refusing the wait, or a wake)
    not_honoured: int = 0  # answers saying the wait was not honoured (`wait.honoured` false), if the server says so
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    def record(self, answer: Answer | None, seconds: float) -> None:
        self.issued += 1
        self.statuses[answer.status if answer else 0] += 1
        if answer is None or answer.status != 200:
            self.failed += 1
            return
        if seconds >= 1.0:
            self.held += 1
        else:
            self.at_once += 1
        with contextlib.suppress(ValueError, AttributeError):
            self.not_honoured += answer.json().get("wait", {}).get("honoured") is False


@dataclass(frozen=True)
class Abuse:
    """What the abusing agent does, from a process of its own (so its client threads do not slow down the other
    agents' measurements in this one): `connections` connections, each sending back to back until told to stop,
    the shared `budget` of requests is spent or `seconds` pass. Picklable: it crosses into a spawned process."""

    kind: str  # "flood" (post_message) or "hog" (read_messages long-polls)
    port: int
    token: str
    thread_id: str
    connections: int
    budget: int
    seconds: float

    def request(self, n: int) -> tuple[str, bytes]:
        if self.kind == "flood":
            return "/v1/mcp/post_message", json.dumps({"thread_id": self.thread_id, "schema_version": 1,
                                                      "kind": "chat", "body": f"flood {n}"}).encode()
        return "/v1/mcp/read_messages", json.dumps({"thread_id": self.thread_id, "since_seq": 0,
                                                   "wait_ms": LONG_POLL_MS}).encode()


def _abuse_connection(spec: Abuse, tally: Flood | Hog, lock: threading.Lock, budget: list[int],
                      stop: Any, deadline: float) -> None:
    headers = {"Authorization": f"Bearer {spec.token}", "Content-Type": "application/json"}
    with Wire(spec.port, timeout=LONG_POLL_MS / 1000 + 10) as wire:
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
                n = budget[0]
            path, body = spec.request(n)
            started = time.monotonic()
            try:
                answer: Answer | None = wire.send("POST", path, body, headers)
            except (OSError, http.client.HTTPException):
                answer = None
            with lock:
                tally.record(answer, time.monotonic() - started)


def _abuse_main(spec: Abuse, stop: Any, ready: Any, out: Any) -> None:
    """The abusing process: its connections in threads; sends its tally back through `out` when they are done."""
    tally: Flood | Hog = Flood() if spec.kind == "flood" else Hog()
    lock, budget = threading.Lock(), [spec.budget]
    deadline = time.monotonic() + spec.seconds
    threads = [threading.Thread(target=_abuse_connection, args=(spec, tally, lock, budget, stop, deadline),
                                daemon=True) for _ in range(spec.connections)]
    for thread in threads:
        thread.start()
    ready.set()
    for thread in threads:
        thread.join(max(0.1, deadline + LONG_POLL_MS / 1000 + 10 - time.monotonic()))
    with lock:
        if isinstance(tally, Flood):
            tally.seconds = spec.seconds - (deadline - time.monotonic())
        out.send(tally)
    out.close()


class Abuser:
    """`with Abuser(spec) as abuser:` the abusing process runs (started and ready); `abuser.stop()` tells it to
    stop, `abuser.result()` waits (bounded) for its tally. On exit it is joined, or killed by PID if it hangs."""

    def __init__(self, spec: Abuse):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.spec = spec
        self._stop, self._ready = context.Event(), context.Event()
        self._in, out = context.Pipe(duplex=False)
        self._process = context.Process(target=_abuse_main, args=(spec, self._stop, self._ready, out),
                                        name=f"bridge-abuse-{spec.kind}", daemon=True)
        self._out = out

    def __enter__(self) -> Abuser:
        self._process.start()
        self._out.close()  # the child holds its own end
        if not self._ready.wait(30):
            self.__exit__()
            raise RuntimeError(f"the {self.spec.kind} process did not start")
        return self

    def stop(self) -> None:
        self._stop.set()

    def result(self) -> Flood | Hog:
        self.stop()
        if not self._in.poll(self.spec.seconds + LONG_POLL_MS / 1000 + 20):
            raise RuntimeError(f"the {self.spec.kind} process sent no result")
        tally: Flood | Hog = self._in.recv()
        return tally

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._process.join(LONG_POLL_MS / 1000 + 20)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        self._in.close()


def window_for(posts: int) -> float:
    """How long the other agents' paced requests may take in all: three times their pace, plus two timeouts."""
    return posts * PACE * 3 + 2 * REQUEST_TIMEOUT


# --------------------------------------------------------------------------------------------------- write flood
def write_flood(server: Server, posts: int) -> list[Figure]:
    coordinator = server.stack.token("coord", "coordinator")
    threads = _threads(server, coordinator, {"flood": ["flooder"], "work": Victims.agents("victim", posts)})
    window = window_for(posts)
    spec = Abuse("flood", server.port, server.stack.token("flooder"), threads["flood"], FLOOD_CONNECTIONS,
                 budget=posts * 500, seconds=window)
    timings, victim = Timings(), Victims(server, threads["work"])
    with Abuser(spec) as abuser:
        paced(posts, time.monotonic() + window, lambda i: timings.add(200, victim.post()))
        flood = abuser.result()
        assert isinstance(flood, Flood)
    return _flood_figures(server, flood, timings, posts)


def _proper_429(answer: Answer) -> bool:
    """RATE_LIMITED in the envelope, with a Retry-After of whole seconds."""
    return (envelope_problem(answer) is None and answer.json()["error"]["code"] == "RATE_LIMITED"
            and answer.headers.get("retry-after", "").isdigit())


def _flood_figures(server: Server, flood: Flood, timings: Timings, planned: int) -> list[Figure]:
    settings = server.settings
    sent = sum(flood.statuses.values())
    accepted = flood.statuses[200]
    allowed = settings.write_burst + math.ceil(settings.write_quota_per_min / 60 * flood.seconds) + 1
    statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(flood.statuses.items()))
    return [
        Figure(AREA, "write flood: the flooder's posts refused 429", flood.statuses[429], sent,
               f"accepted <= burst + quota x time ({allowed})", accepted <= allowed and flood.statuses[429] > 0
               and set(flood.statuses) <= {200, 429}, note=f"{statuses} over {flood.seconds:.1f} s"),
        Figure(AREA, "write flood: 429s outside the envelope", flood.bad_429, flood.statuses[429], "0",
               flood.bad_429 == 0),
        *_latency_figures("write flood: another agent's post", timings, planned),
    ]


# --------------------------------------------------------------------------------------------------- long-polls
def long_poll_hog(server: Server, posts: int) -> list[Figure]:
    coordinator = server.stack.token("coord", "coordinator")
    threads = _threads(server, coordinator, {"hog": ["hog"], "work": Victims.agents("victim", posts)})
    polls = 2 * server.settings.threads
    window = window_for(posts)
    spec = Abuse("hog", server.port, server.stack.token("hog"), threads["hog"], polls, budget=polls * posts * 20,
                 seconds=window)
    posting, health = Timings(), Timings()
    victim = Victims(server, threads["work"])

    def step(i: int) -> None:
        posting.add(200, victim.post())
        if i % 2 == 0:
            health.add(200, request(server.port, "GET", "/health"))

    with Abuser(spec) as abuser:
        time.sleep(1.0)  # the long-polls are in place
        paced(posts, time.monotonic() + window, step)
        abuser.stop()
        # release the waits still held: a message on the hog's thread answers them all
        request(server.port, "POST", "/v1/mcp/post_message", {"thread_id": threads["hog"], "schema_version": 1,
                                                              "kind": "chat", "body": "release"}, coordinator,
                timeout=LONG_POLL_MS / 1000 + 5)
        hog = abuser.result()
        assert isinstance(hog, Hog)
    statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(hog.statuses.items()))
    return [
        Figure(AREA, f"long-polls: the hog's waits ({polls} connections, one token)", hog.held, hog.issued,
               f">= {polls} issued (reported)", hog.issued >= polls,
               note=f"held >= 1 s: {hog.held}, answered at once: {hog.at_once} ({hog.not_honoured} saying the "
                    f"wait was not honoured), failed: {hog.failed}; statuses {statuses}"),
        *_latency_figures("long-polls: another agent's post", posting, posts),
        *_latency_figures("long-polls: /health", health, (posts + 1) // 2),
    ]


# --------------------------------------------------------------------------------------------------- slow sockets
@dataclass
class Trickle:
    opened: int = 0
    dropped: int = 0  # closed by the server
    first_drop_s: float | None = None
    bytes_sent: int = 0


TRICKLE = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096


def slow_connections(server: Server, requests_: int) -> list[Figure]:
    coordinator = server.stack.token("coord", "coordinator")
    thread_id = _threads(server, coordinator, {"work": ["reader"]})["work"]
    reader = server.stack.token("reader")
    count = max(100, server.settings.threads * 4) + 2  # the connection limit (bridge.http.server), plus two
    trickle = Trickle()
    sockets: list[socket.socket] = []
    window = max(SLOW_SECONDS, requests_ * PACE * 4) + 2 * REQUEST_TIMEOUT
    started = time.monotonic()

    def trickler(stop: threading.Event) -> None:
        position = 0
        while not stop.is_set() and time.monotonic() - started < window + 5:
            for sock in list(sockets):
                if _closed_by_peer(sock):
                    sockets.remove(sock)
                    sock.close()
                    trickle.dropped += 1
                    trickle.first_drop_s = trickle.first_drop_s or round(time.monotonic() - started, 1)
                    continue
                with contextlib.suppress(OSError):  # a reset shows up on the next round
                    trickle.bytes_sent += sock.send(TRICKLE[position % len(TRICKLE):][:1])
            position += 1
            stop.wait(1.0)

    try:
        for _ in range(count):
            sock = socket.create_connection((HOST, server.port), timeout=REQUEST_TIMEOUT)
            sock.setblocking(False)
            sockets.append(sock)
            trickle.opened += 1
        health, reads = Timings(), Timings()
        with background([trickler], join_timeout=3.0):
            time.sleep(1.5)  # every slow socket has sent a byte or two

            def step(i: int) -> None:
                health.add(200, request(server.port, "GET", "/health"))
                reads.add(200, request(server.port, "POST", "/v1/mcp/read_messages",
                                       {"thread_id": thread_id, "since_seq": 0}, reader))

            # spread over SLOW_SECONDS: the slow sockets outlive a read deadline of a few seconds
            paced(requests_, started + window, step, pace=max(PACE * 4, SLOW_SECONDS / requests_))
    finally:
        for sock in sockets:
            sock.close()
    return [
        Figure(AREA, f"slow connections: sockets trickling 1 byte/s ({count})", trickle.dropped, trickle.opened,
               f"{count} opened and trickling (reported)", trickle.opened == count and trickle.bytes_sent >= count,
               note=f"closed by the server: {trickle.dropped} (first after {trickle.first_drop_s} s); "
                    f"{trickle.bytes_sent} bytes trickled"),
        *_latency_figures("slow connections: normal /health", health, requests_),
        *_latency_figures("slow connections: normal read_messages", reads, requests_),
    ]


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the server closed (or answered and closed) a non-blocking socket."""
    try:
        sock.recv(4096, socket.MSG_PEEK)  # end of stream, or an answer the server sent before closing
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


# --------------------------------------------------------------------------------------------------- the run
def victim_posts(scale: Scale) -> int:
    """Normal posts per load: 20 per unit of scale."""
    return 20 * max(1, scale.n)


def run(scale: Scale, workdir: Path) -> list[Figure]:
    """The three abuses, each on its own server."""
    posts = victim_posts(scale)
    figures: list[Figure] = []
    with serve(workdir / "abuse-flood") as server:
        figures += write_flood(server, posts)
    with serve(workdir / "abuse-long-poll") as server:
        figures += long_poll_hog(server, posts)
    with serve(workdir / "abuse-slow") as server:
        figures += slow_connections(server, max(5, posts // 2))
    return figures
