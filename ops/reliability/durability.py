"""Crash durability (`crash`): `kill -9` of `bridge serve` under write load, restart, and what the clients were told.

Each of `scale.crash_runs` runs opens a thread and lets WRITERS client threads post to it back to back, every post
with its own idempotency key. After a random moment the server gets SIGKILL (no shutdown code runs); the writers
keep retrying the post they were on (same key, same payload) through the outage; the server restarts on the same
port and database (`synchronous=FULL`), the retries land, the writers post a little more and stop. One database
serves every run, so the last read-back covers what survived every crash.

Figures, from the clients' ledger against a full read-back of every thread after the last run:
- acknowledged messages lost (a 200 the client got, missing or changed in the read-back): target 0;
- seq gaps (missing seqs in 1..latest): target 0;
- duplicates (more than one message for one idempotency key, after all the retries): target 0;
- in-doubt posts (sent, no answer) that an idempotent retry resolved: target all.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from pathlib import Path

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.ledger import Ledger
from bridge_ops.reliability.stack import reliability_stack

from bridge.testing.client import Client, new_thread, read_thread
from bridge.testing.stack import NO_LIMITS, Stack

AREA = "crash durability"
WRITERS = 4
FILLER = "crash durability probe " * 8
LOAD_SECONDS = (0.3, 1.0)  # how long the writers post before the kill (uniform)
OUTAGE_SECONDS = (0.05, 0.3)  # how long the port stays closed
AFTER_SECONDS = 0.3  # writing after the restart, before the run ends
RETRY_BUDGET = 120.0  # seconds a writer keeps retrying one post


def _writer(port: int, token: str, ledger: Ledger, thread_id: str, prefix: str, stop: threading.Event) -> None:
    """Post until `stop`; retry each post (same key, same payload) on no answer or 503 until it is acknowledged."""
    n = 0
    with Client(port, token, timeout=10) as client:
        while not stop.is_set():
            key = f"{prefix}-{n}"
            n += 1
            payload = Ledger.payload(ledger.attempt(key, thread_id, Ledger.body(key, FILLER)))
            give_up = time.monotonic() + RETRY_BUDGET
            while True:
                reply = client.call("post_message", payload)
                outcome = ledger.record(key, reply)
                if outcome == "acked" or (outcome == "refused" and reply.status != 503):
                    break
                if time.monotonic() > give_up:
                    return
                time.sleep(0.02)


def _crash_run(stack: Stack, port: int, tokens: list[str], ledger: Ledger, thread_id: str, run_no: int,
               rng: random.Random) -> None:
    """Load, kill -9 mid-load, keep retrying through the outage, restart on the same port, settle, stop."""
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(port, token, ledger, thread_id, f"r{run_no}-w{i}", stop),
                                daemon=True) for i, token in enumerate(tokens)]
    for w in writers:
        w.start()
    try:
        time.sleep(rng.uniform(*LOAD_SECONDS))
        assert stack.server is not None
        stack.server.kill9()
        time.sleep(rng.uniform(*OUTAGE_SECONDS))
        stack.serve("server", port=port)
        time.sleep(AFTER_SECONDS)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=RETRY_BUDGET + 30)


def run(scale: Scale, workdir: Path) -> list[Figure]:
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    ledger = Ledger()
    threads: list[str] = []
    with reliability_stack(workdir, NO_LIMITS) as stack:
        port = stack.serve("server").port
        agents = [f"writer-{i}" for i in range(WRITERS)]
        tokens = [stack.token(a) for a in agents]
        with stack.client(stack.token("coordinator", "coordinator")) as coord:
            for run_no in range(scale.crash_runs):
                threads.append(new_thread(coord, agents, f"crash run {run_no}", type="conversation"))
                _crash_run(stack, port, tokens, ledger, threads[-1], run_no, rng)
            audit = ledger.audit({t: read_thread(coord, t) for t in threads})
    in_doubt = [p for p in ledger.posts.values() if p.in_doubt]
    resolved = sum(1 for p in in_doubt if p.acked is not None)
    runs = scale.crash_runs
    lost_note = f"{runs} kill -9 runs, {WRITERS} writers, seed {seed}"
    if audit.lost:
        lost_note += f"; lost keys: {', '.join(audit.lost[:5])}"
    return [
        Figure(AREA, "acknowledged messages lost after kill -9 + restart", len(audit.lost), audit.acked, "0",
               not audit.lost, note=lost_note),
        Figure(AREA, "seq gaps in the read-back", audit.gaps, audit.messages, "0", audit.gaps == 0),
        Figure(AREA, "duplicates after idempotent retries", audit.duplicates + audit.unexpected, audit.messages,
               "0", audit.duplicates + audit.unexpected == 0,
               note=f"{audit.unexpected} messages no client sent" if audit.unexpected else ""),
        Figure(AREA, "in-doubt posts resolved by an idempotent retry", resolved, len(in_doubt), "all",
               resolved == len(in_doubt),
               note=f"{audit.committed_unacked} of them had committed without their acknowledgement "
                    "(the retry was a replay)"),
    ]
