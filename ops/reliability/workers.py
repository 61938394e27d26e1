"""Wake workers under faults (`workers`): trigger jobs delivered by `bridge worker` processes, counted by effect.

One `bridge serve --no-worker` and AGENTS fake agents, each in its own pane of a private tmux server. A fake agent
(`python -m bridge_ops.reliability.workers agent ...`, below) heartbeats as a managed, idle session of its pane, reads
what is typed into it, and for every submitted line appends the trigger ids the line holds to its own log, then
heartbeats (the bridge's acknowledgement). A delivery is counted there, by effect: a trigger id in N submitted lines
was delivered N times, whatever the bridge's status column says.

Jobs are `trigger_participant` calls (a coordinator, one request id each, round robin over agents and threads),
enqueued evenly while the faults are injected. The fast wake timings of the drills apply (lease 5 s, poll 200 ms),
with an 8 s acknowledgement timeout so that a slow, loaded machine does not cause legitimate re-deliveries, a
20 ms Enter delay, and the trigger storm guard off. Three parts, each on its own batch of jobs:

Each fault lands, in turn, while the worker probes the pane it is about to type into (`tmux display-message`),
while it types (`tmux send-keys`), or anywhere, always while it holds a claim on a queued job.

- kill -9: two workers; a worker holding claims is killed and a fresh one started, repeatedly. Figures: jobs that
  never reach a terminal state (target 0), jobs never delivered to their agent (0), duplicate deliveries (at most
  one per crash: the job being typed when the worker died is retyped after its lease).
- SIGSTOP: two workers; a worker holding claims is stopped past its lease (the other reclaims its jobs), then
  continued. Figures: stale completions accepted: results of the stopped worker committed after another worker took
  the job over (attempt rows spanning the whole stop; target 0), duplicate typing (at most one per stop), jobs never
  finished or never delivered (0).
- racing: RACERS workers over one batch, no fault. Figures: duplicate deliveries (0), jobs never finished or never
  delivered (0).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import secrets
import sys
import termios
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bridge_ops.reliability.figures import Figure, Scale
from bridge_ops.reliability.stack import reliability_stack

from bridge.testing.client import Client, new_thread
from bridge.testing.processes import Proc, wait_until
from bridge.testing.stack import NO_LIMITS, Stack

AGENTS = 4
THREADS = 2
RACERS = 3
ENV = {**NO_LIMITS, "BRIDGE_ENTER_DELAY": "20ms", "BRIDGE_ACK_TIMEOUT": "8s", "BRIDGE_LOG_LEVEL": "INFO"}
LEASE_SECONDS = 5.0  # FAST_TIMINGS' BRIDGE_WORKER_LEASE
STOP_SECONDS = LEASE_SECONDS + 2.0  # a stop lasts past the lease, so the other worker takes the jobs over
KILL_SPACING = 1.0  # seconds of feeding per planned crash
# Where each fault lands, in turn: mid-probe of the target pane, mid-typing, or anywhere (always holding a claim).
MOMENTS = ("probe", "typing", "any")
SETTLE_TIMEOUT = 90.0  # seconds for every job of a batch to reach a terminal state after the faults
TERMINAL = ("delivered", "resumed", "spawned", "failed")
SESSION = "bridge-default"  # the workspace's tmux session: the fake agents' windows


# --------------------------------------------------------------------------------------------------- fake agent
def heartbeat(session_id: str, pane: str, cwd: str) -> dict[str, object]:
    """heartbeat_session arguments: the agent's session is managed, idle and in `pane`."""
    return {"session_id": session_id, "runtime": "generic-reliability", "status": "idle", "resumable": False,
            "management_mode": "managed", "tmux_target": pane, "cwd": cwd}


def _heartbeat(client: Client, session_id: str, pane: str) -> None:
    """Heartbeat (the agent's acknowledgement), sent again up to twice when it got no answer."""
    for _ in range(3):
        if client.call("heartbeat_session", heartbeat(session_id, pane, os.getcwd())).status is not None:
            return
        time.sleep(0.05)


def agent_main(argv: list[str]) -> int:
    """The fake agent in a pane: log every submitted line's trigger ids (the effect), then heartbeat (the ack)."""
    from bridge.domain.wake import ENVELOPE_PATTERN

    parser = argparse.ArgumentParser(prog="python -m bridge_ops.reliability.workers agent")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    token = Path(args.token_file).read_text().strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    pane = os.environ["TMUX_PANE"]
    client = Client(args.port, token)
    _heartbeat(client, claims["session_id"], pane)
    print(f"FAKE AGENT READY {claims['agent_id']}", flush=True)
    fd = sys.stdin.fileno()
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ICANON | termios.ECHO)  # whole lines of any length, no echo
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    pending = b""
    with open(args.log, "a", encoding="utf-8") as log:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return 0
            if not chunk:
                return 0
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                ids = sorted({m["id"] for m in ENVELOPE_PATTERN.finditer(raw.decode("utf-8", "replace"))})
                if ids:
                    log.write(json.dumps({"t": time.time(), "ids": ids}) + "\n")
                    log.flush()
                    _heartbeat(client, claims["session_id"], pane)


# --------------------------------------------------------------------------------------------------- the bench
@dataclass
class Batch:
    """One part's jobs (request id prefix) and what happened to them."""

    name: str
    trigger_ids: list[str] = field(default_factory=list)
    not_queued: int = 0  # jobs whose decision was not typed delivery (the agent was not reachable)
    faults: int = 0
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    offline_marks: int = 0  # runtime_offline records while every pane was alive (the bridge's own audit trail)
    held: int = 0  # jobs the faulted workers held when the fault landed
    stale_accepted: int = 0
    windows: list[tuple[int, int, str, list[str]]] = field(default_factory=list)  # (stop ms, cont ms, worker, held)


class Workbench:
    """The server, the fake agents and their threads; jobs are enqueued and followed here."""

    def __init__(self, stack: Stack, rng: random.Random):
        self.stack, self.rng = stack, rng
        self.port = stack.serve("server").port
        self.effects = stack.workdir / "effects"
        self.effects.mkdir(exist_ok=True)
        self.agents = [f"agent-{i}" for i in range(AGENTS)]
        self.panes: dict[str, str] = {}
        self.coord_token = stack.token("coordinator", "coordinator")
        self.coord = stack.client(self.coord_token)
        for agent in self.agents:
            self._launch(agent)
        self.threads = [new_thread(self.coord, self.agents, f"workers {i}", type="conversation")
                        for i in range(THREADS)]
        self.workers: list[Proc] = []
        self._serial = 0

    def _launch(self, agent: str) -> None:
        """The agent's fake agent in a new window of the private tmux server, once it heartbeated."""
        argv = [sys.executable, "-m", "bridge_ops.reliability.workers", "agent", "--port", str(self.port),
                "--token-file", str(self.stack.token_file(agent)), "--log", str(self.effects / f"{agent}.jsonl")]
        self.panes[agent] = self.stack.tmux.new_window(SESSION, agent, argv, cwd=str(self.stack.workdir))
        if not wait_until(lambda: self.stack.query(
                "SELECT 1 FROM sessions WHERE agent_id = ? AND management_mode = 'managed'", (agent,)), 30):
            raise RuntimeError(f"fake agent {agent} never heartbeated")

    def begin(self, name: str) -> Batch:
        """A new batch; every agent re-registers first (a part starts with every runtime managed and idle, whatever
        the part before did to the registry)."""
        for agent in self.agents:
            with self.stack.client(self.stack.token(agent)) as client:
                client.ok("heartbeat_session", heartbeat(f"{agent}-s1", self.panes[agent], str(self.stack.workdir)))
        return Batch(name)

    def end(self, batch: Batch) -> None:
        """Stop the part's workers; count the runtimes the bridge marked offline meanwhile (every pane lived)."""
        self.stop_workers()
        batch.offline_marks = self.stack.query(
            "SELECT count(*) FROM audit_events WHERE operation = 'runtime_offline' AND occurred_at >= ?",
            (batch.started_ms,))[0][0]

    def start_worker(self) -> Proc:
        self._serial += 1
        proc = self.stack.worker(f"worker-{self._serial}")
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.workers = []

    def enqueue(self, batch: Batch, count: int, seconds: float, burst: int = 1) -> threading.Thread:
        """Enqueue `count` jobs in bursts of `burst`, evenly over `seconds`, in a background thread (joined by the
        caller). Bursts let a worker claim several jobs at once, as it would after a busy moment."""
        def feed() -> None:
            started = time.monotonic()
            with self.stack.client(self.coord_token) as client:
                for k in range(count):
                    if k % burst == 0:
                        time.sleep(max(0.0, started + seconds * k / count - time.monotonic()))
                    reply = client.ok("trigger_participant", {
                        "thread_id": self.threads[k % THREADS], "target_agent_id": self.agents[k % AGENTS],
                        "reason": "reliability", "trigger_prompt": f"reliability {batch.name} job {k}",
                        "request_id": f"{batch.name}-{k}"})
                    batch.trigger_ids.append(reply["trigger_id"])
                    batch.not_queued += reply["job_status"] != "queued"

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        return feeder

    def held_by(self, worker: Proc, batch: Batch) -> list[str]:
        """The batch's jobs whose claim this worker holds right now."""
        rows = self.stack.query("SELECT trigger_id FROM trigger_jobs WHERE claim_token LIKE ? AND request_id LIKE ?",
                              (f"{worker.ready}-%", f"{batch.name}-%"))
        return [r[0] for r in rows]

    def statuses(self, batch: Batch) -> dict[str, str]:
        rows = self.stack.query("SELECT trigger_id, status FROM trigger_jobs WHERE request_id LIKE ?",
                              (f"{batch.name}-%",))
        return {r[0]: r[1] for r in rows}

    def settle(self, batch: Batch, feeder: threading.Thread) -> dict[str, str]:
        """Wait (bounded) until every job of the batch is terminal; the final statuses."""
        feeder.join(timeout=600)
        wait_until(lambda: all(s in TERMINAL for s in self.statuses(batch).values()), SETTLE_TIMEOUT, 0.2)
        time.sleep(0.5)  # a late side effect of a continued worker shows up in the logs
        return self.statuses(batch)

    def deliveries(self) -> Counter[str]:
        """Trigger id -> submitted lines that held it, from every fake agent's own log."""
        seen: Counter[str] = Counter()
        for path in self.effects.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    seen.update(json.loads(line)["ids"])
        return seen

    def holds_queued(self, worker: Proc, batch: Batch) -> bool:
        """True while `worker` holds a claim on one of the batch's queued jobs (about to deliver it)."""
        return bool(self.stack.query(
            "SELECT 1 FROM trigger_jobs WHERE claim_token LIKE ? AND request_id LIKE ? AND status = 'queued'",
            (f"{worker.ready}-%", f"{batch.name}-%")))

    def wait_moment(self, worker: Proc, batch: Batch, moment: str, timeout: float = 10.0) -> bool:
        """Wait (bounded) for the moment a fault lands at, `worker` holding a claim on one of the batch's queued
        jobs: `probe` (it runs `tmux display-message`: the probe of the pane it is about to type into), `typing`
        (it runs `tmux send-keys`) or `any`. When the moment does not come in time, any moment holding a claim.
        False when not even that came (the caller re-checks the claims once the fault holds the worker still)."""
        wanted = {"probe": "display-message", "typing": "send-keys"}.get(moment)
        deadline = time.monotonic() + timeout
        while wanted is not None and time.monotonic() < deadline:
            if wanted in _tmux_children(worker.pid) and self.holds_queued(worker, batch):
                return True
            time.sleep(0.001)
        return bool(wait_until(lambda: self.holds_queued(worker, batch), 1.0 if wanted else timeout, 0.005))


def _tmux_children(pid: int) -> set[str]:
    """Every argument of the tmux commands (`display-message`, `send-keys`, ...) process `pid` runs right now."""
    found: set[str] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if argv[0].endswith(b"tmux"):
                    found.update(a.decode(errors="replace") for a in argv[1:])
    return found


# --------------------------------------------------------------------------------------------------- the parts
def _kill_part(bench: Workbench, jobs: int, crashes: int) -> Batch:
    batch = bench.begin("kill")
    bench.start_worker()
    bench.start_worker()
    feeder = bench.enqueue(batch, jobs, crashes * KILL_SPACING, burst=4)
    for n in range(crashes):
        victim = bench.rng.choice(bench.workers)
        if not bench.wait_moment(victim, batch, MOMENTS[n % len(MOMENTS)]):
            continue
        held = bench.held_by(victim, batch)
        victim.kill9()
        batch.held += len(held)
        batch.faults += 1
        bench.workers.remove(victim)
        bench.start_worker()
        time.sleep(bench.rng.uniform(0.1, 0.5))
    bench.settle(batch, feeder)
    bench.end(batch)
    return batch


def _stop_part(bench: Workbench, jobs: int, stops: int) -> Batch:
    batch = bench.begin("stop")
    bench.start_worker()
    bench.start_worker()
    feeder = bench.enqueue(batch, jobs, stops * (STOP_SECONDS + 1.0), burst=8)
    for n in range(stops):
        victim = bench.rng.choice(bench.workers)
        if not bench.wait_moment(victim, batch, MOMENTS[n % len(MOMENTS)]):
            continue
        victim.pause()
        stopped_at = int(time.time() * 1000)
        held = bench.held_by(victim, batch)
        if not held:  # released between the check and the signal: nothing to test this time
            victim.cont()
            continue
        time.sleep(STOP_SECONDS)
        continued_at = int(time.time() * 1000)
        victim.cont()
        batch.faults += 1
        batch.held += len(held)
        batch.windows.append((stopped_at, continued_at, victim.ready or "", held))
        time.sleep(bench.rng.uniform(0.3, 1.0))
    bench.settle(batch, feeder)
    batch.stale_accepted = _stale_accepted(bench, batch)
    bench.end(batch)
    return batch


def _stale_accepted(bench: Workbench, batch: Batch) -> int:
    """Jobs held by a stopped worker, taken over by another during the stop (an attempt started inside the stop),
    for which a result of the stopped worker was still committed (an attempt row spanning the whole stop)."""
    stale = 0
    for stopped_at, continued_at, _, held in batch.windows:
        for trigger_id in held:
            rows = bench.stack.query("SELECT started_at, finished_at FROM trigger_attempts WHERE trigger_id = ?",
                                   (trigger_id,))
            taken_over = any(stopped_at < start < continued_at for start, _ in rows)
            late = any(start <= stopped_at and (end or 0) >= continued_at for start, end in rows)
            stale += taken_over and late
    return stale


def _race_part(bench: Workbench, jobs: int) -> Batch:
    batch = bench.begin("race")
    for _ in range(RACERS):
        bench.start_worker()
    feeder = bench.enqueue(batch, jobs, 0.0)
    bench.settle(batch, feeder)
    bench.end(batch)
    return batch


# --------------------------------------------------------------------------------------------------- figures
def _outcomes(batch: Batch, statuses: dict[str, str], seen: Counter[str]) -> tuple[int, int, int, str]:
    """(never finished, never delivered by effect, duplicate deliveries, note) for a batch."""
    unfinished = sum(1 for t in batch.trigger_ids if statuses.get(t) not in TERMINAL)
    undelivered = sum(1 for t in batch.trigger_ids if not seen[t])
    duplicates = sum(seen[t] - 1 for t in batch.trigger_ids if seen[t] > 1)
    by_status = Counter(statuses.get(t, "missing") for t in batch.trigger_ids)
    note = "final status " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
    if batch.not_queued:
        note += f"; {batch.not_queued} jobs were not queued for typed delivery"
    return unfinished, undelivered, duplicates, note


def run(scale: Scale, workdir: Path) -> list[Figure]:
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    crashes = min(10, max(2, scale.n // 2))
    stops = min(5, max(2, scale.n // 4))
    kill_jobs, stop_jobs = scale.jobs * 2 // 5, scale.jobs * 3 // 10
    race_jobs = scale.jobs - kill_jobs - stop_jobs
    with reliability_stack(workdir, ENV) as stack:
        bench = Workbench(stack, rng)
        try:
            parts = [_kill_part(bench, kill_jobs, crashes), _stop_part(bench, stop_jobs, stops),
                     _race_part(bench, race_jobs)]
            statuses = {name: bench.statuses(b) for name, b in zip(("kill", "stop", "race"), parts, strict=True)}
            seen = bench.deliveries()
            refused = sum(len(p.log_events("stale_claim")) for p in stack.procs if p.name.startswith("worker-"))
        finally:
            bench.coord.close()
    kill, stop, race = parts
    figures: list[Figure] = []
    for batch, area in ((kill, "workers: kill -9"), (stop, "workers: SIGSTOP"), (race, f"workers: {RACERS} racing")):
        unfinished, undelivered, duplicates, note = _outcomes(batch, statuses[batch.name], seen)
        jobs = len(batch.trigger_ids)
        figures.append(Figure(area, "jobs never reaching a terminal state", unfinished, jobs, "0", unfinished == 0,
                              note=note))
        figures.append(Figure(area, "jobs never delivered to the agent (its log)", undelivered, jobs, "0",
                              undelivered == 0))
        figures.append(Figure(area, "live agents marked offline", batch.offline_marks, AGENTS, "0",
                              batch.offline_marks == 0, note="every agent's pane was alive throughout"))
        if batch is kill:
            figures.append(Figure(area, f"duplicate deliveries ({batch.faults} crashes)", duplicates, jobs,
                                  f"<= {batch.faults} (1/crash)", duplicates <= batch.faults,
                                  note=f"{batch.held} jobs held by the killed workers; seed {seed}"))
        elif batch is stop:
            figures.append(Figure(area, f"stale completions accepted ({batch.faults} stops)", batch.stale_accepted,
                                  batch.held, "0", batch.stale_accepted == 0,
                                  note=f"of the jobs the stopped worker held; the workers logged {refused} late "
                                       "results refused"))
            figures.append(Figure(area, f"duplicate typing after SIGCONT ({batch.faults} stops)", duplicates, jobs,
                                  f"<= {batch.faults} (1/stop)", duplicates <= batch.faults))
        else:
            figures.append(Figure(area, "duplicate deliveries", duplicates, jobs, "0", duplicates == 0))
    for batch, area, planned in ((kill, "workers: kill -9", crashes), (stop, "workers: SIGSTOP", stops)):
        if batch.faults < planned:  # a fault that found the worker idle tested nothing: say so
            figures.append(Figure(area, "faults landed while the worker held claims", batch.faults, planned, "all",
                                  False))
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] != ["agent"]:
        sys.exit("usage: python -m bridge_ops.reliability.workers agent --port P --token-file F --log L")
    sys.exit(agent_main(sys.argv[2:]))
