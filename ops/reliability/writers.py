"""Concurrent writers (`writers`): several `bridge serve` processes on ONE database file, clients posting to each.

SERVERS processes share the database (WAL, `synchronous=FULL`, the default 5 s busy timeout). Each gets
CLIENTS_PER_SERVER client threads, each with its own agent and keep-alive connection, all posting back to back
to one shared thread (every post allocates the next seq of the same thread, from whichever process) with their own
idempotency keys. A 503 is counted and retried with the same key; anything else that is not a 200 is counted.

Figures, from the clients' ledger and a read-back of the thread:
- busy errors returned to clients (503 database_busy) of all requests: target 0;
- other refusals (any non-200 that is not busy, or no answer): target 0;
- p99 latency of a post as the client measured it (all attempts), in ms: target < P99_TARGET_MS;
- acknowledged posts lost, seq gaps, duplicates: target 0.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.ledger import Ledger
from bridge_ops.reliability.stack import reliability_stack

from bridge.testing.client import Client, new_thread, read_thread
from bridge.testing.stack import NO_LIMITS
from bridge.testing.stats import percentile

AREA = "concurrent writers"
SERVERS = 3
CLIENTS_PER_SERVER = 3
POSTS_PER_SCALE = 150  # requests in all, per unit of scale
P99_TARGET_MS = 1000.0
FILLER = "concurrent writer probe " * 8
MAX_RETRIES = 20


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.busy = self.other = 0
        self.latencies: list[float] = []
        self.other_examples: list[str] = []

    def add(self, ms: float, busy: bool, other: str | None) -> None:
        with self.lock:
            self.requests += 1
            self.latencies.append(ms)
            self.busy += busy
            if other is not None:
                self.other += 1
                if len(self.other_examples) < 3:
                    self.other_examples.append(other)


def _writer(port: int, token: str, ledger: Ledger, thread_id: str, prefix: str, posts: int,
            counts: _Counts, gate: threading.Barrier) -> None:
    with Client(port, token, timeout=30) as client:
        gate.wait(timeout=60)
        for n in range(posts):
            key = f"{prefix}-{n}"
            payload = Ledger.payload(ledger.attempt(key, thread_id, Ledger.body(key, FILLER)))
            for _ in range(MAX_RETRIES):
                reply = client.call("post_message", payload)
                outcome = ledger.record(key, reply)
                busy = reply.status == 503 and reply.reason == "database_busy"
                other = None if outcome == "acked" or busy else \
                    f"{reply.status} {reply.code}/{reply.reason}" if reply.status else str(reply.error)
                counts.add(reply.ms, busy, other)
                if outcome == "acked" or (outcome == "refused" and reply.status != 503):
                    break
                time.sleep(0.05)


def run(scale: Scale, workdir: Path) -> list[Figure]:
    writers = SERVERS * CLIENTS_PER_SERVER
    per_writer = max(1, POSTS_PER_SCALE * scale.n // writers)
    ledger = Ledger()
    counts = _Counts()
    with reliability_stack(workdir, NO_LIMITS) as stack:
        servers = [stack.serve(f"server-{i}") for i in range(SERVERS)]
        agents = [f"writer-{i}" for i in range(writers)]
        with stack.client(stack.token("coordinator", "coordinator"), server=servers[0]) as coord:
            thread_id = new_thread(coord, agents, "concurrent writers", type="conversation")
            gate = threading.Barrier(writers)
            threads = [threading.Thread(target=_writer, daemon=True, args=(
                servers[i % SERVERS].port, stack.token(agent), ledger, thread_id, agent, per_writer, counts, gate))
                for i, agent in enumerate(agents)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=600)
            seconds = time.monotonic() - started
            audit = ledger.audit({thread_id: read_thread(coord, thread_id)})
    latencies = sorted(counts.latencies)
    p99 = round(percentile(latencies, 99), 1)
    setup = f"{SERVERS} serve processes x {CLIENTS_PER_SERVER} clients on one database file, one shared thread"
    return [
        Figure(AREA, "busy errors returned to clients", counts.busy, counts.requests, "0", counts.busy == 0,
               note=setup),
        Figure(AREA, "other refusals or unanswered posts", counts.other, counts.requests, "0", counts.other == 0,
               note="; ".join(counts.other_examples)),
        Figure(AREA, "p99 post latency (client-measured)", p99, None, f"< {P99_TARGET_MS:g} ms",
               p99 < P99_TARGET_MS, unit="ms",
               note=f"p50 {percentile(latencies, 50):.1f} ms, max {latencies[-1]:.1f} ms, "
                    f"{counts.requests / seconds:.0f} req/s over {seconds:.1f}s" if latencies else ""),
        Figure(AREA, "acknowledged posts lost", len(audit.lost), audit.acked, "0", not audit.lost),
        Figure(AREA, "seq gaps", audit.gaps, audit.messages, "0", audit.gaps == 0),
        Figure(AREA, "duplicate messages", audit.duplicates + audit.unexpected, audit.messages, "0",
               audit.duplicates + audit.unexpected == 0),
    ]
