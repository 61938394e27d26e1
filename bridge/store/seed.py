"""Bulk-fill a bridge database with a realistic history, so benchmarks and capacity runs start from big threads.

The rows have the shapes the services write: threads, participants, sessions, read cursors and loop-guard finding
counters go through the store's own functions (threads.py, control.py, messages.py); messages, the bulk, are
inserted with one prepared `executemany` per batch. Each batch is one `BEGIN IMMEDIATE` transaction that also
moves its threads' `latest_seq`, so every commit leaves the invariants of `bridge db check` true (gapless seqs per
thread, `latest_seq` equal to the last one). The seeding connection runs with `synchronous=OFF`; the final
checkpoint runs with FULL, so the file is durable when `seed` returns. A process killed mid-seed keeps the batches
committed so far; a power loss or OS crash mid-seed can damage the file (synchronous=OFF): seed scratch databases.

History: `messages` spread round-robin over `threads` (one second apart, ending now), sent by the
thread's participants: mostly chat (some addressed with `to_agents`), with structured events (findings reported,
fixes pushed, findings verified, re-reviews requested) carrying metadata; read cursors at varied positions.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from bridge.domain.vocabulary import EventType, Role
from bridge.store import control as control_store
from bridge.store import messages as message_store
from bridge.store import threads as thread_store
from bridge.store.db import connect
from bridge.store.rows import dumps

COORDINATOR = "seed-coordinator"
BATCH = 50_000  # messages per transaction
STEP_MS = 1000  # between two messages of the history (which ends now)
THREAD_TYPES = ("conversation", "workflow", "incident")
SEVERITIES = ("low", "medium", "high")
OPEN_FINDINGS = 20  # most findings a thread has open at once: reviews converge (fixed and verified)
TOPICS = ("design", "tests", "naming", "performance", "docs")
_WORDS = ("the", "review", "thread", "patch", "test", "fails", "passes", "because", "cursor", "message", "seq",
          "writer", "reader", "commit", "we", "should", "check", "again", "after", "rebase", "looks", "good", "to",
          "me", "please", "see", "line", "in", "module", "with", "edge", "case", "for", "empty", "input")
_INSERT_MESSAGE = (
    "INSERT INTO messages (message_id, thread_id, seq, schema_version, kind, event_type, body, metadata,"
    " sender_agent_id, sender_session_id, sender_role, in_reply_to, to_agents, to_role, created_at, idempotency_key,"
    " payload_hash) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL)")


@dataclass(frozen=True)
class SeedPlan:
    """What to seed: `messages` spread evenly over `threads`, each thread with `participants` agents."""

    threads: int
    messages: int
    participants: int = 4
    seed: int = 0
    workspace_id: str = "default"


def agent_ids(participants: int) -> list[str]:
    """The seeded agents, in the order they join every thread (the first is the author of the threads' work)."""
    return [f"seed-agent-{n}" for n in range(1, participants + 1)]


def session_id(agent_id: str) -> str:
    """The session id a seeded agent's messages and registry entry carry."""
    return f"{agent_id}-seed"


def thread_count(path: Path | str) -> int:
    """Threads already in the database file (0 for a file without the bridge's schema), read without writing."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'threads'").fetchall():
            return conn.execute("SELECT COUNT(*) FROM threads").fetchall()[0][0]
        return 0
    finally:
        conn.close()


@dataclass
class _Thread:
    """One seeded thread while its history is generated: the last seq and when, and its findings still open."""

    thread_id: str
    latest_seq: int = 0
    updated_at: int = 0
    findings: int = 0
    open_findings: list[tuple[str, str]] = field(default_factory=list)  # (message id, finding id)


class _History:
    """Generates message rows in commit order, deterministically from the plan's seed."""

    def __init__(self, plan: SeedPlan, threads: list[_Thread], start_ms: int):
        self.rng = random.Random(plan.seed)
        self.threads = threads
        self.agents = agent_ids(plan.participants)
        self.sessions = [session_id(a) for a in self.agents]
        self.addressed = [dumps([a]) for a in self.agents]
        self.bodies = [" ".join(self.rng.choices(_WORDS, k=self.rng.randint(6, 60))) for _ in range(256)]
        self.chat_metadata = ["{}", "{}", "{}", *(dumps({"topic": t}) for t in TOPICS)]
        self.start_ms = start_ms

    def rows(self, first: int, count: int) -> Iterator[tuple[Any, ...]]:
        """Message rows number `first` to `first + count - 1` of the whole history (round-robin over threads)."""
        rng, agents, threads = self.rng, len(self.agents), self.threads
        for n in range(first, first + count):
            thread = threads[n % len(threads)]
            thread.latest_seq += 1
            at = self.start_ms + n * STEP_MS
            thread.updated_at = at
            sender = rng.randrange(agents)
            message_id = f"msg_{at:012x}{rng.getrandbits(48):012x}"
            roll = rng.random()
            if roll < 0.12 and agents > 1:
                yield self._event(thread, message_id, sender, roll, at)
                continue
            to = self.addressed[(sender + 1) % agents] if roll < 0.30 and agents > 1 else None
            yield (message_id, thread.thread_id, thread.latest_seq, "chat", None,
                   f"{self.bodies[rng.randrange(256)]} (#{thread.latest_seq})", self.chat_metadata[n % 8],
                   self.agents[sender], self.sessions[sender], Role.PARTICIPANT, None, to, at)

    def _event(self, thread: _Thread, message_id: str, sender: int, roll: float, at: int) -> tuple[Any, ...]:
        """A structured event: a finding reported to the author, a fix pushed, a finding verified or a re-review."""
        reply_to, to = None, None
        if (roll < 0.05 and len(thread.open_findings) < OPEN_FINDINGS) or not thread.open_findings:
            thread.findings += 1
            finding_id = f"F{thread.findings}"
            kind = EventType.FINDING_REPORTED
            sender = sender or 1  # the author (agent 0) does not report findings against itself
            to = self.addressed[0]
            metadata = {"event_type": kind, "finding_id": finding_id, "severity": SEVERITIES[thread.findings % 3],
                        "file": f"src/module_{thread.findings % 17}.py", "line": 1 + thread.findings * 7 % 400}
            thread.open_findings.append((message_id, finding_id))
        elif roll < 0.08:
            kind, sender = EventType.FIX_PUSHED, 0
            finding_id = thread.open_findings[-1][1]
            metadata = {"event_type": kind, "finding_id": finding_id, "commit": f"{self.rng.getrandbits(40):010x}"}
        elif roll < 0.11:
            kind, sender = EventType.FINDING_VERIFIED, sender or 1  # a reviewer verifies the author's fix
            reply_to, finding_id = thread.open_findings.pop(0)
            metadata = {"event_type": kind, "finding_id": finding_id}
        else:
            kind = EventType.RE_REVIEW_REQUESTED
            metadata = {"event_type": kind, "finding_id": thread.open_findings[-1][1]}
        body = f"{kind.replace('_', ' ')}: {metadata['finding_id']} (#{thread.latest_seq})"
        return (message_id, thread.thread_id, thread.latest_seq, "event", kind, body, dumps(metadata),
                self.agents[sender], self.sessions[sender], Role.PARTICIPANT, reply_to, to, at)


@contextlib.contextmanager
def _transaction(conn: apsw.Connection) -> Iterator[None]:
    """One `BEGIN IMMEDIATE` transaction, rolled back if the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert_threads(conn: apsw.Connection, plan: SeedPlan, rng: random.Random, now: int) -> list[_Thread]:
    """The plan's threads with every seeded agent as participant (the first as author) and the registry entries."""
    agents = agent_ids(plan.participants)
    threads = []
    for n in range(plan.threads):
        thread_id = f"thr_{now:012x}{rng.getrandbits(48):012x}"
        thread_store.insert_thread(conn, {
            "thread_id": thread_id, "workspace_id": plan.workspace_id, "title": f"Seeded review #{n + 1}",
            "type": THREAD_TYPES[n % 3], "metadata": {"seeded": True, "repo": f"example/service-{n % 10}"},
            "created_by": COORDINATOR, "idempotency_key": None, "request_hash": None, "created_at": now})
        for position, agent in enumerate(agents):
            thread_store.add_participant(conn, thread_id, agent, "author" if position == 0 else "reviewer", now)
        threads.append(_Thread(thread_id))
    for position, agent in enumerate([COORDINATOR, *agents]):
        control_store.upsert_session(conn, {
            "workspace_id": plan.workspace_id, "agent_id": agent, "session_id": session_id(agent),
            "runtime": ("claude-code", "codex")[position % 2], "runtime_kind": ("claude", "codex")[position % 2],
            "status": "idle", "resumable": 1, "management_mode": "unmanaged", "tmux_target": None, "cwd": None,
            "now": now, "host_id": None})
    return threads


def insert_messages(conn: apsw.Connection, rows: Iterator[tuple[Any, ...]], threads: list[_Thread], at: int) -> None:
    """Insert a batch of message rows, then move every thread's `latest_seq` and `updated_at` to its last message."""
    conn.executemany(_INSERT_MESSAGE, rows)
    conn.executemany("UPDATE threads SET latest_seq = ?, updated_at = ? WHERE thread_id = ?",
                     [(t.latest_seq, t.updated_at or at, t.thread_id) for t in threads])


def insert_finding_counts(conn: apsw.Connection, threads: list[_Thread]) -> None:
    """One loop-guard report per seeded finding, as posting them would have counted."""
    for thread in threads:
        for n in range(1, thread.findings + 1):
            message_store.bump_finding(conn, thread.thread_id, f"id:F{n}")


def insert_cursors(conn: apsw.Connection, plan: SeedPlan, threads: list[_Thread], rng: random.Random,
                   now: int) -> int:
    """Read cursors at varied positions (none, part way, caught up); returns how many were stored."""
    stored = 0
    for thread in threads:
        for agent in agent_ids(plan.participants):
            position = rng.choice((None, 0.25, 0.5, 0.9, 1.0))
            if position is not None and thread.latest_seq:
                message_store.set_cursor(conn, thread.thread_id, agent, int(thread.latest_seq * position), now)
                stored += 1
    return stored


def seed(path: Path | str, plan: SeedPlan, *, busy_timeout: float = 5.0,
         on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Fill the (migrated) database at `path` according to `plan`; `on_batch(messages_so_far)` after each commit.

    Returns the counts written and the time taken."""
    if plan.threads < 1 or plan.messages < 0 or plan.participants < 1:
        raise ValueError("a seed needs at least one thread and one participant")
    started = time.monotonic()
    now = time.time_ns() // 1_000_000
    start = now - plan.messages * STEP_MS
    rng = random.Random(plan.seed)
    conn = connect(path, synchronous="OFF", busy_timeout=busy_timeout, create=False)
    try:
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes of a million messages stay in memory
        with _transaction(conn):
            threads = insert_threads(conn, plan, rng, start)
        history = _History(plan, threads, start)
        for first in range(0, plan.messages, BATCH):
            count = min(BATCH, plan.messages - first)
            with _transaction(conn):
                insert_messages(conn, history.rows(first, count), threads, start + (first + count - 1) * STEP_MS)
            if on_batch is not None:
                on_batch(first + count)
        with _transaction(conn):
            insert_finding_counts(conn, threads)
            cursors = insert_cursors(conn, plan, threads, rng, now)
        conn.execute("PRAGMA synchronous=FULL")  # the checkpoint below fsyncs the database file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    seconds = time.monotonic() - started
    return {"database": str(path), "threads": plan.threads, "messages": plan.messages,
            "participants": plan.participants, "read_cursors": cursors, "seed": plan.seed,
            "seconds": round(seconds, 2), "messages_per_second": round(plan.messages / seconds) if seconds else None}
