"""Storage faults (`storage`): a full disk and a file-size limit under `bridge serve`, then space freed again.

Two faults, each on its own database and `bridge serve --no-worker` process:

- disk full: the database lives on a small tmpfs mounted by the scenario (needs root, like the storage-fault
  tests); a ballast file fills it, leaving a little headroom; freeing space = deleting the ballast;
- file-size limit: the server starts with RLIMIT_FSIZE set (preexec_fn), so no file of it may grow past LIMIT
  (EFBIG, as on a full disk but confined to the process); freeing space = lifting the limit (prlimit).

A client posts large messages (each with its own idempotency key) until the first refusal, then keeps posting a
while (each refused post followed by a read), the space is freed, and it probes: a post and GET /ready, spaced
out. Then the server is killed (-9), restarted on the same file, and every thread is read back.

Figures, per fault, from the client's ledger and the read-back:
- writes acknowledged but not committed (a 200 missing from the read-back after the restart): target 0;
- refused writes that were committed anyway (the server said nothing was written): target 0;
- refusals carrying the fault's own reason (`disk_full`, `file_too_large`): target all, and at least one;
- reads answered while writes failed: target all;
- writes accepted after space was freed, /ready ready after space was freed: target all of the probes (the note
  says how long /ready took to turn ready by itself, before any client write).
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.ledger import Ledger
from bridge_ops.reliability.stack import reliability_stack

from bridge.testing.client import Client, new_thread, read_thread
from bridge.testing.processes import Proc, wait_until
from bridge.testing.stack import NO_LIMITS, Stack

TMPFS_SIZE = "16m"
HEADROOM = 1024 * 1024  # bytes left free on the tmpfs after the ballast
FSIZE_LIMIT = 4 * 1024 * 1024  # RLIMIT_FSIZE of the limited server
BIG = "storage fault probe " * 800  # ~16 KiB per post: the WAL grows fast
BASELINE = 10  # acknowledged posts before the fault bites
MAX_FILL_POSTS = 600  # bound on posts sent before the first refusal
PROBE_SPACING = 0.05  # seconds between recovery probes
READY_TIMEOUT = 15.0  # seconds for /ready to turn ready by itself after space is freed


@dataclass
class Outcome:
    """What the client saw during one fault."""

    reasons: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    reads_ok: int = 0
    reads: int = 0
    probes: int = 0
    writes_after: int = 0
    ready_after: int = 0
    ready_seconds: float | None = None
    lost: list[str] = field(default_factory=list)
    refused_committed: int = 0
    acked: int = 0


def _post(client: Client, ledger: Ledger, thread_id: str, key: str, filler: str) -> str:
    post = ledger.attempt(key, thread_id, Ledger.body(key, filler))
    return ledger.record(key, client.call("post_message", Ledger.payload(post)))


def _exercise(stack: Stack, server: Proc, fault: Callable[[], object], free: Callable[[], object], probes: int,
              while_full: int) -> Outcome:
    """Baseline, fault, fill until refused, keep going while full, free space, probe recovery, kill -9, restart,
    read back."""
    out = Outcome()
    ledger = Ledger()
    coord = stack.client(stack.token("coordinator", "coordinator"))
    writer = stack.client(stack.token("writer"))
    try:
        thread_id = new_thread(coord, ["writer"], "storage fault", type="conversation")
        for i in range(BASELINE):
            _post(writer, ledger, thread_id, f"base-{i}", "small")
        fault()
        refusals = 0
        for i in range(MAX_FILL_POSTS + while_full):
            if _post(writer, ledger, thread_id, f"fill-{i}", BIG) != "acked":
                refusals += 1
            if refusals:
                out.reads += 1
                reply = writer.call("read_messages", {"thread_id": thread_id, "since_seq": 0, "limit": 1})
                out.reads_ok += reply.ok
            if refusals >= while_full or (not refusals and i >= MAX_FILL_POSTS):
                break
        freed = time.monotonic()
        free()
        ready = wait_until(lambda: coord.get("/ready").ok, READY_TIMEOUT, 0.05)
        out.ready_seconds = round(time.monotonic() - freed, 2) if ready else None
        for i in range(probes):
            out.ready_after += coord.get("/ready").ok
            out.writes_after += _post(writer, ledger, thread_id, f"after-{i}", "small") == "acked"
            time.sleep(PROBE_SPACING)
        out.probes = probes
    finally:
        writer.close()
        coord.close()
    server.kill9()
    stack.serve(server.name + "-restarted")
    with stack.client(stack.token("coordinator", "coordinator")) as reader:
        audit = ledger.audit({thread_id: read_thread(reader, thread_id)})
    refused_keys = [p for p in ledger.posts.values() if p.refusals]
    out.refused = len(refused_keys)
    out.reasons = Counter(p.refusals[0].rsplit("/", 1)[-1] for p in refused_keys)  # "503 UNAVAILABLE/<reason>"
    out.lost, out.acked = audit.lost, audit.acked
    out.refused_committed = len(audit.refused_committed)
    return out


def _figures(area: str, reason: str, out: Outcome) -> list[Figure]:
    right = out.reasons.get(reason, 0)
    seen = ", ".join(f"{k} {v}" for k, v in out.reasons.most_common()) or "no refusal: the fault never bit"
    ready_note = (f"/ready turned ready {out.ready_seconds:g}s after space was freed, before any client write"
                  if out.ready_seconds is not None else f"/ready still not ready {READY_TIMEOUT:g}s after space "
                                                        "was freed")
    return [
        Figure(area, "writes acknowledged but not committed", len(out.lost), out.acked, "0", not out.lost,
               note="read back after kill -9 and restart"),
        Figure(area, "refused writes found committed", out.refused_committed, out.refused, "0",
               out.refused_committed == 0),
        Figure(area, f"refusals with reason {reason}", right, out.refused, "all", out.refused > 0 and
               right == out.refused, note=f"reasons seen: {seen}"),
        Figure(area, "reads answered while writes failed", out.reads_ok, out.reads, "all",
               out.reads > 0 and out.reads_ok == out.reads),
        Figure(area, "writes accepted after space was freed", out.writes_after, out.probes, "all",
               out.probes > 0 and out.writes_after == out.probes),
        Figure(area, "/ready ready after space was freed", out.ready_after, out.probes, "all",
               out.probes > 0 and out.ready_after == out.probes and out.ready_seconds is not None, note=ready_note),
    ]


# --------------------------------------------------------------------------------------------------- disk full
def _mount(path: Path) -> str | None:
    """Mount a TMPFS_SIZE tmpfs on `path`; None, or why it could not be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(path)],
                              check=False, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)


def _fill(ballast: Path) -> None:
    """Write a ballast file until its file system is full, then give HEADROOM bytes back."""
    chunk = b"\0" * (64 * 1024)
    with open(ballast, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(chunk)
            handle.flush()
    size = ballast.stat().st_size
    with open(ballast, "r+b") as handle:
        handle.truncate(max(0, size - HEADROOM))


def _disk_full(workdir: Path, probes: int, while_full: int) -> list[Figure]:
    area = "storage: disk full"
    disk = workdir / "disk"
    problem = _mount(disk)
    if problem is not None:
        return [Figure(area, "a small tmpfs could be mounted", 0, 1, "1", False,
                       note=f"mounting needs root (CAP_SYS_ADMIN): {problem[:200]}")]
    try:
        with reliability_stack(workdir / "disk-full", NO_LIMITS, db=disk / "bridge.db") as stack:
            server = stack.serve("server")
            ballast = disk / "ballast"
            out = _exercise(stack, server, lambda: _fill(ballast), ballast.unlink, probes, while_full)
    finally:
        _umount(disk)
    return _figures(area, "disk_full", out)


# --------------------------------------------------------------------------------------------------- file size
def _limit_fsize() -> None:
    """preexec_fn of the limited server: no file it writes may grow past FSIZE_LIMIT (soft limit only)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, hard))


def _file_size(workdir: Path, probes: int, while_full: int) -> list[Figure]:
    with reliability_stack(workdir / "file-size", NO_LIMITS) as stack:
        server = stack.serve("server", preexec_fn=_limit_fsize)

        def free() -> None:
            for pid in server.pids:  # `bridge serve` and each serving process it forked
                _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))

        out = _exercise(stack, server, lambda: None, free, probes, while_full)  # limited from its start
    return _figures("storage: file-size limit", "file_too_large", out)


def run(scale: Scale, workdir: Path) -> list[Figure]:
    probes = max(5, 5 * scale.n)
    while_full = max(5, 5 * scale.n)
    return [*_disk_full(workdir, probes, while_full), *_file_size(workdir, probes, while_full)]
