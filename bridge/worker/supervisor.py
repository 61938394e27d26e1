"""The supervisor worker: one `tick(now)` reconciles panes, enqueues automatic wakes and advances trigger jobs.

`run()` only loops: tick, then sleep until the next job is due, the poll interval passes, or a nudge arrives (a post,
an ack or a heartbeat in this process, or a commit another serving process announced). Jobs are claimed with a lease
and a claim token; a worker that dies mid-job leaves a lease that expires, and its late result is refused because the
token no longer matches.

Workers on many hosts share one (PostgreSQL) database: each delivers (types, resumes, spawns) only for jobs whose
target's runtime is registered on its own host (`BRIDGE_HOST_ID`) or on no host, and probes only those panes; the
others' jobs are left, unclaimed, for their host's worker.

The workers inside `bridge serve` processes on one host elect one of them through the database (`run(stop,
elect=True)`): only the holder of the lease `worker:<workspace>@<host>` ticks, renewing it every third of
`BRIDGE_LEADER_LEASE`; the others stand by and the first to find it lapsed takes over. Standalone `bridge worker`
processes do not take part: any number of them may tick beside it (jobs are leased one by one).

Job states: queued (deliver to the tmux pane) → awaiting_ack → delivered; or, on the fallback chain,
resume → resumed, spawn → spawned; failed is the dead letter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.agents import discover_session_id
from bridge.agents.base import AgentPlan
from bridge.domain import wake
from bridge.domain.authz import Principal
from bridge.domain.templates import load_templates, render
from bridge.domain.vocabulary import Role
from bridge.errors import Unavailable
from bridge.services import runtimes as runtime_service
from bridge.services.command_lines import command_env, isolated
from bridge.services.core import Bridge, Call, audit
from bridge.services.threads import build_summary
from bridge.services.triggers import auto_wake, loop_blocked
from bridge.store import control as control_store
from bridge.store import messages as message_store
from bridge.store import shared as shared_store
from bridge.store import threads as thread_store
from bridge.store import triggers as trigger_store
from bridge.store.engines import Connection
from bridge.worker.runtimes import CommandResult, run_command
from bridge.worker.tmux import Tmux, TmuxError, TmuxUnavailable

log = logging.getLogger("bridge.worker")
WORKER = Call(Principal(agent_id="bridge:worker", workspace_id="-", role=Role.WORKER, session_id="worker"))
FOLD_BATCH = 1000
"""Messages folded into the automatic-wake table per write transaction (bounds how long a tick holds the lock)."""
# what happened in this process that may give the worker something to do at once: a post or a new trigger (a job
# due), an ack or a heartbeat (an awaited acknowledgement), a runtime paused or resumed (its deferred jobs)
NUDGING_EVENTS = frozenset({"message_posted", "trigger_enqueued", "cursor_advanced", "heartbeat",
                            "runtime_pause_changed"})


class StaleClaim(Exception):
    """The job's claim was taken over (lease expired): this worker's result is discarded."""


@dataclass
class TickReport:
    """What one tick did (tests and logs)."""

    woken: list[str] = field(default_factory=list)
    processed: list[tuple[str, str]] = field(default_factory=list)  # (trigger_id, status after)
    offline: list[str] = field(default_factory=list)


class Supervisor:
    """Advances the wake pipeline of one workspace."""

    def __init__(self, bridge: Bridge, tmux: Tmux | None = None, *, wall: Callable[[], float] = time.time):
        self.bridge = bridge
        self.settings = bridge.settings
        self.tmux = tmux or Tmux(self.settings.tmux_socket)
        self.templates = load_templates(self.settings.runtimes_file)
        self.wall = wall
        self.worker_id = f"w-{os.getpid()}-{secrets.token_hex(3)}"  # which process, for operators and logs
        self.host = self.settings.local_host_id  # it delivers only to runtimes on this host (or on no host)
        self.nudge = threading.Event()
        self._ack_recheck_ms = round(self.settings.ack_recheck * 1000)  # a typed or spawned job looks again
        self.url = self.settings.url  # the bridge's address given to spawned agents (serve sets the bound one)
        self._last_beat = 0
        self._stopping: threading.Event | None = None  # run()'s stop event: cuts a running fallback command short
        self._last_reconcile = 0
        self._last_sweep: int | None = None  # when automatic wake last looked at the whole workspace
        self._sessions: dict[str, str] = {}  # each agent's session status at the last look
        self._unwoken: set[str] = set()  # threads with a candidate that could not be woken at the last look
        self._lead_renewed: int | None = None  # when this worker last took or renewed the lease (None: not leading)
        self._last_tick = 0.0
        self.overlap = False  # run() sets it: resume commands then run beside the loop, not inside a tick
        self._commands: dict[str, threading.Thread] = {}  # target agent id -> its command running in the background
        self._commands_lock = threading.Lock()
        bridge.events.subscribe(self._on_event)

    def _on_event(self, name: str, fields: dict[str, Any]) -> None:
        if name in NUDGING_EVENTS:
            self.nudge.set()

    # ------------------------------------------------------------------------------------------- loop
    def run(self, stop: threading.Event, *, elect: bool = False) -> None:
        """Tick until `stop` is set (signal handlers only set it); with `elect`, only while leading (see above)."""
        log.info("worker started", extra={"event": "worker_started"})
        self._stopping = stop
        self.overlap = True
        while not stop.is_set():
            if elect and not self._leading():
                stop.wait(self.settings.leader_lease / 3)
                continue
            gap = self.settings.worker_tick_gap - (time.monotonic() - self._last_tick)
            time.sleep(max(0.0, gap))  # a burst of posts: one tick
            self._last_tick = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("worker tick failed", extra={"event": "worker_tick_failed"})
            if stop.is_set():
                break
            self.nudge.wait(min(self._next_wait(), self.settings.leader_lease / 3) if elect else self._next_wait())
            self.nudge.clear()
        for thread in self._background():  # their commands see `stop` and end within a poll interval
            thread.join(timeout=15)
        if self._lead_renewed is not None:  # hand over at once rather than when the lease lapses
            with contextlib.suppress(Unavailable):
                self.bridge.store.write(lambda c: shared_store.release_lease(c, self.lease_name, self.worker_id))
        log.info("worker stopped", extra={"event": "worker_stopped"})

    @property
    def lease_name(self) -> str:
        """The database lease the workers of `bridge serve` processes elect their one worker with."""
        return f"worker:{self.bridge.workspace}@{self.host}"

    def _leading(self) -> bool:
        """Whether this worker holds the lease, taking or renewing it once a third of it has passed."""
        now = self.bridge.clock()
        lease_ms = round(self.settings.leader_lease * 1000)
        if self._lead_renewed is not None and now - self._lead_renewed < lease_ms / 3:
            return True
        try:
            fencing = self.bridge.store.write(
                lambda c: shared_store.take_lease(c, self.lease_name, self.worker_id, now, lease_ms))
        except Unavailable:
            fencing = None
        leading = fencing is not None
        if leading != (self._lead_renewed is not None):
            log.info("worker leading" if leading else "worker standing by",
                     extra={"event": "worker_leading" if leading else "worker_standing_by", "fencing": fencing})
        self._lead_renewed = now if leading else None
        return leading

    def _next_wait(self) -> float:
        now = self.bridge.clock()
        due = self.bridge.store.query(lambda c: trigger_store.next_due_at(c, self.bridge.workspace, host=self.host))
        wait = self.settings.worker_poll if due is None else (due - now) / 1000
        return min(max(wait, 0.005), self.settings.worker_poll)

    def tick(self, now: int | None = None) -> TickReport:
        """One pass: heartbeat, reconcile panes, enqueue automatic wakes, advance every due job once.

        `now` fixes the clock for the whole tick (tests); otherwise every job is judged at its own fresh time. Jobs
        are claimed a few at a time, only as many as one lease covers even if every step took its worst case, and
        each step re-takes its claim right before it types, starts or runs anything (`_hold_claim`): a job another
        worker reclaimed meanwhile is never acted on twice."""
        fixed = now
        now = self.bridge.clock() if fixed is None else fixed
        report = TickReport()
        self._beat(now)
        if now - self._last_reconcile >= self.settings.worker_poll * 1000:  # not on every nudge: probes cost
            self._last_reconcile = now
            report.offline = self._reconcile(now)
        report.woken = self._auto_wake(now)
        seen: set[str] = set()
        while len(seen) < self.settings.worker_jobs_per_tick:  # then beat, reconcile, auto-wake
            claim_at = self.bridge.clock() if fixed is None else fixed
            token, jobs = self._claim(claim_at, seen)
            if not jobs:
                break
            for job in jobs:
                seen.add(job["trigger_id"])
                job_now = self.bridge.clock() if fixed is None else fixed
                try:
                    report.processed.append((job["trigger_id"], self.process(job, token, job_now)))
                except StaleClaim:
                    log.warning("late result refused", extra={"event": "stale_claim",
                                                              "trigger_id": job["trigger_id"]})
        if any(status in wake.TERMINAL for _, status in report.processed):
            self.nudge.set()  # a finished wake may leave a message it did not cover: look again at once
        self.bridge.events.emit("worker_tick", at=self.wall())
        return report

    def _claim(self, now: int, skip: set[str]) -> tuple[str, list[dict[str, Any]]]:
        """Lease the next due jobs (not those in `skip`) under a fresh claim token."""
        token = f"{self.worker_id}-{secrets.token_hex(6)}"
        workspace = self.bridge.workspace
        if not self.bridge.store.read(lambda c: trigger_store.any_due(c, workspace, now, skip, host=self.host)):
            return token, []
        return token, self.bridge.store.write(lambda c: trigger_store.claim_due(
            c, workspace, now, int(self.settings.worker_lease * 1000), token, self._claim_limit(), skip,
            host=self.host))

    def _claim_limit(self) -> int:
        """How many jobs one lease covers if every step took its worst case: three tmux calls at their timeout
        plus the Enter delay (a resume or spawn re-takes its claim for the command's own timeout)."""
        worst = 3 * self.tmux.timeout + self.settings.enter_delay
        return max(1, min(self.settings.worker_claim_batch, int(self.settings.worker_lease // worst)))

    def _beat(self, now: int) -> None:
        if now - self._last_beat >= 1000:
            self._last_beat = now
            wall = self.wall()
            self.bridge.store.write(lambda c: control_store.set_flag(c, "worker_heartbeat", f"{wall:.3f}", now))

    # ------------------------------------------------------------------------------------------- reconcile
    def _reconcile(self, now: int) -> list[str]:
        """Mark managed runtimes of this host (or of none) whose pane is missing or dead as offline (another
        host's panes are on its own tmux server: only its worker can tell)."""
        sessions = self.bridge.store.read(lambda c: control_store.list_sessions(c, self.bridge.workspace,
                                                                                host=self.host))
        gone = []
        for s in sessions:
            if s["management_mode"] != "managed" or not s["tmux_target"] or s["status"] == "offline":
                continue
            try:
                pane = self.tmux.probe(s["tmux_target"])
            except TmuxUnavailable:  # no answer is no verdict: look again next time
                continue
            if pane is None or pane.dead:
                code = wake.TARGET_NOT_FOUND if pane is None else wake.PANE_DEAD
                runtime_service.mark_offline(self.bridge, WORKER, s["agent_id"], s["tmux_target"], code)
                gone.append(s["agent_id"])
        return gone

    # ------------------------------------------------------------------------------------------- automatic wake
    def _auto_wake(self, now: int) -> list[str]:
        """One trigger per (thread, agent, newest addressed unread seq), deduplicated in the database. New messages
        are folded in first, a bounded batch per write, and only what changed is looked at: the threads of the new
        messages, the threads whose candidates could not be woken last time (a wake under way, a loop-guard block),
        and the threads of agents whose session status changed. Every `BRIDGE_WORKER_POLL` (and on the first tick)
        the whole workspace is looked at, for the rare changes not covered (members added, roles changed)."""
        store, workspace = self.bridge.store, self.bridge.workspace
        touched: set[str] = set()
        while store.read(trigger_store.has_unfolded):
            touched |= store.write(lambda c: trigger_store.fold_addressed(c, FOLD_BATCH))
        sessions = store.read(lambda c: trigger_store.session_states(c, workspace))
        changed = {agent for agent, status in sessions.items() if self._sessions.get(agent) != status}
        self._sessions = sessions
        if self._last_sweep is None or now - self._last_sweep >= self.settings.worker_poll * 1000:
            self._last_sweep = now
            candidates = store.read(lambda c: trigger_store.wake_candidates(c, workspace))
        else:
            threads = touched | self._unwoken
            candidates = store.read(lambda c: trigger_store.wake_candidates(c, workspace, threads=threads)
                                    if threads else [])
            if changed:
                seen = {(c["thread_id"], c["agent_id"]) for c in candidates}
                candidates += [c for c in store.read(lambda c: trigger_store.wake_candidates(
                    c, workspace, agents=changed)) if (c["thread_id"], c["agent_id"]) not in seen]
        created = []
        self._unwoken = set()
        for cand in candidates:
            made = auto_wake(self.bridge, WORKER, thread_id=cand["thread_id"], agent_id=cand["agent_id"],
                             seq=cand["seq"], now=now)
            if made:
                created.append(made)
            else:
                self._unwoken.add(cand["thread_id"])
        return created

    # ------------------------------------------------------------------------------------------- jobs
    def process(self, job: dict[str, Any], token: str, now: int) -> str:
        """Advance one claimed job by one step; return its status after."""
        if job["status"] == "awaiting_ack":  # nothing more is typed or run: an ack that came still counts
            return self._check_ack(job, token, now)
        thread = self.bridge.store.read(lambda c: thread_store.get_thread(c, job["thread_id"]))
        if thread is None or thread["status"] == "closed":
            return self._finish(job, token, now, "failed", "THREAD_CLOSED", "the thread is closed")
        if self.bridge.store.read(lambda c: loop_blocked(c, job["thread_id"])):
            return self._finish(job, token, now, "failed", wake.THREAD_AUTO_BLOCKED,
                                "the thread was blocked by the loop guard")
        if job["status"] in ("resume", "spawn"):  # a paused runtime holds every trigger, not only tmux delivery
            session = self._session(job["target_agent_id"])
            if session is not None and session["paused"]:
                return self._defer(job, token, now, wake.RUNTIME_PAUSED, self.settings.defer_recheck * 1000)
        if self._busy(job["target_agent_id"]):  # one thing at a time per agent: its command is still running
            return self._update(job, token, now, {"next_attempt_at": now + round(self.settings.busy_recheck * 1000)})
        deferred = self._storm_guard(job, token, now)
        if deferred is not None:
            return deferred
        if job["status"] == "resume" and self.overlap:
            return self._in_background(job, self._resume, token, now)
        step = {"queued": self._deliver, "resume": self._resume, "spawn": self._spawn}[job["status"]]
        return step(job, token, now)

    def _storm_guard(self, job: dict[str, Any], token: str, now: int) -> str | None:
        """At most `trigger_rate_per_min` attempts per (thread, agent) a minute, whatever the step (typing, resume,
        spawn): the excess waits until the window has room (TRIGGER_RATE_LIMITED). None when there is room."""
        rate = self.settings.trigger_rate_per_min
        if not rate:
            return None
        window_start = now - 60_000
        thread_id, agent_id = job["thread_id"], job["target_agent_id"]
        used = self.bridge.store.read(lambda c: trigger_store.recent_attempt_count(c, thread_id, agent_id,
                                                                                   window_start))
        if used < rate:
            return None
        oldest = self.bridge.store.read(lambda c: trigger_store.oldest_attempt_since(
            c, thread_id, agent_id, window_start)) or now
        return self._defer(job, token, now, wake.TRIGGER_RATE_LIMITED, oldest + 60_000 - now + 1)

    def _busy(self, agent_id: str) -> bool:
        with self._commands_lock:
            return agent_id in self._commands

    def _background(self) -> list[threading.Thread]:
        with self._commands_lock:
            return list(self._commands.values())

    def _in_background(self, job: dict[str, Any], step: Callable[[dict[str, Any], str, int], str], token: str,
                       now: int) -> str:
        """Run a slow step (a resume command: up to its timeout) on its own thread, so acks, wakes and other
        agents' jobs keep moving; the job stays claimed (its lease covers the command) and this agent's other
        jobs wait until it ends."""
        agent_id = job["target_agent_id"]

        def work() -> None:
            try:
                step(job, token, now)
            except StaleClaim:
                log.warning("late result refused", extra={"event": "stale_claim", "trigger_id": job["trigger_id"]})
            except Exception:
                log.exception("background step failed", extra={"event": "worker_step_failed",
                                                              "trigger_id": job["trigger_id"]})
            finally:
                with self._commands_lock:
                    self._commands.pop(agent_id, None)
                self.nudge.set()

        thread = threading.Thread(target=work, name=f"bridge-{job['status']}-{job['trigger_id']}", daemon=True)
        with self._commands_lock:
            self._commands[agent_id] = thread
        thread.start()
        return job["status"]

    def _session(self, agent_id: str) -> dict[str, Any] | None:
        return self.bridge.store.read(lambda c: control_store.get_session(c, self.bridge.workspace, agent_id))

    def _deliver(self, job: dict[str, Any], token: str, now: int) -> str:
        session = self._session(job["target_agent_id"])
        if session is not None and session["paused"]:
            return self._defer(job, token, now, wake.RUNTIME_PAUSED, self.settings.defer_recheck * 1000)
        decision = wake.decide(session, now, self.settings.session_stale)
        if decision.job_status != "queued":
            return self._fallback(job, token, now, session, wake.TARGET_NOT_FOUND, "no reachable managed pane")
        target = session["tmux_target"]
        try:
            pane = self.tmux.probe(target)
        except TmuxUnavailable as exc:  # no verdict on the pane: retry later, never mark a live agent offline
            return self._retry_or_fallback(job, token, now, session, wake.SEND_KEYS_ERROR, str(exc))
        if pane is None or pane.dead:
            code = wake.TARGET_NOT_FOUND if pane is None else wake.PANE_DEAD
            self._hold_claim(job, token, 0)  # a worker whose claim lapsed must not mark anyone offline
            runtime_service.mark_offline(self.bridge, WORKER, job["target_agent_id"], target, code)
            return self._fallback(job, token, now, self._session(job["target_agent_id"]), code, f"pane {target}")
        if not job["force"]:
            human_recent = pane.last_input is not None and self.wall() - pane.last_input < self.settings.quiet_window
            if human_recent or pane.in_mode:
                since = job["deferred_since"] or now
                if now - since >= self.settings.max_defer * 1000:
                    return self._fallback(job, token, now, session, wake.DEFER_TIMEOUT,
                                          f"operator busy for {self.settings.max_defer:g}s")
                return self._defer(job, token, now, wake.OPERATOR_BUSY, self.settings.defer_recheck * 1000,
                                   deferred_since=since)
        cursor = self.bridge.store.read(lambda c: message_store.get_cursor(c, job["thread_id"],
                                                                           job["target_agent_id"]))
        plan = AgentPlan.of(session)
        self._hold_claim(job, token, 0)
        typed_at = self.bridge.clock()
        try:
            self.tmux.type_line(pane.pane_id, wake.envelope(job["trigger_id"], job["thread_id"], job["reason"],
                                                            job["prompt"]),
                                mode=plan.delivery if plan else "keys",
                                enter_delay=plan.enter_delay if plan else self.settings.enter_delay)
        except TmuxError as exc:
            return self._retry_or_fallback(job, token, now, session, wake.SEND_KEYS_ERROR, str(exc))
        self.bridge.events.emit("trigger_typed", trigger_id=job["trigger_id"], thread_id=job["thread_id"])
        return self._update(job, token, now, {
            "status": "awaiting_ack", "deliveries": job["deliveries"] + 1, "delivered_at": typed_at,
            "ack_deadline": typed_at + int(self.settings.ack_timeout * 1000), "ack_cursor_seq": cursor,
            "ack_stage": "tmux", "tmux_target": pane.pane_id, "next_attempt_at": typed_at + self._ack_recheck_ms,
            "deferred_since": None, "defer_reason": None},
            attempt=("tmux", "typed", None, f"typed into {pane.pane_id}"))

    def _acked(self, job: dict[str, Any], baseline: int, since: int) -> bool:
        """The agent's own effect: its read cursor on the thread moved past `baseline`, or it heartbeat after
        `since` (ms). Nothing else (an exit code, a typed line) counts."""
        def check(conn: Connection) -> bool:
            cursor = message_store.get_cursor(conn, job["thread_id"], job["target_agent_id"])
            session = control_store.get_session(conn, self.bridge.workspace, job["target_agent_id"])
            return cursor > baseline or (session is not None and session["last_heartbeat_at"] > since)

        return self.bridge.store.read(check)

    def _check_ack(self, job: dict[str, Any], token: str, now: int) -> str:
        stage = job["ack_stage"] or "tmux"
        if self._acked(job, job["ack_cursor_seq"] or 0, job["delivered_at"]):
            self._learn_session_id(job, stage)
            return self._finish(job, token, now, wake.ACKED_STATUS[stage], None, "acknowledged", stage=stage)
        if now < job["ack_deadline"]:
            recheck_at = min(job["ack_deadline"], now + self._ack_recheck_ms)
            return self._update(job, token, now, {"next_attempt_at": recheck_at})
        if stage == "spawn":
            self.bridge.store.write(lambda c: trigger_store.record_runtime_failure(
                c, self.bridge.workspace, job["target_agent_id"], "spawn", now))
            return self._finish(job, token, now, "failed", wake.SPAWN_FAILED,
                                f"the spawned session did not read or acknowledge within "
                                f"{self.settings.spawn_ack_timeout:g}s", stage="spawn")
        return self._retry_or_fallback(job, token, now, self._session(job["target_agent_id"]), wake.ACK_TIMEOUT,
                                       f"no ack within {self.settings.ack_timeout:g}s")

    def _retry_or_fallback(self, job: dict[str, Any], token: str, now: int, session: dict[str, Any] | None,
                           code: str, detail: str) -> str:
        deliveries = job["deliveries"] + (1 if code == wake.SEND_KEYS_ERROR else 0)
        if deliveries <= self.settings.delivery_retries:
            return self._update(job, token, now, {
                "status": "queued", "deliveries": deliveries,
                "next_attempt_at": now + int(wake.delivery_backoff(max(deliveries, 1)) * 1000)},
                attempt=("tmux", "retry", code, detail))
        return self._fallback(job, token, now, session, code, detail)

    def _fallback(self, job: dict[str, Any], token: str, now: int, session: dict[str, Any] | None, code: str,
                  detail: str) -> str:
        resumable = session is not None and session["resumable"] and \
            not wake.is_stale(session, now, self.settings.session_stale)
        status = "resume" if resumable else "spawn"
        return self._update(job, token, now, {"status": status, "next_attempt_at": now, "deferred_since": None,
                                              "defer_reason": None},
                            attempt=("tmux", "fallback", code, f"{detail}; next: {status}"), audit_reason=code)

    def _defer(self, job: dict[str, Any], token: str, now: int, code: str, delay_ms: float,
               deferred_since: int | None = None) -> str:
        first = job["defer_reason"] != code
        return self._update(job, token, now, {
            "next_attempt_at": now + int(delay_ms), "defer_reason": code,
            "deferred_since": deferred_since if deferred_since is not None else job["deferred_since"]},
            attempt=(_stage(job), "deferred", code, None) if first else None,  # one row per deferral, not re-check
            audit_reason=code if first else None)

    def _resume(self, job: dict[str, Any], token: str, now: int) -> str:
        session = self._session(job["target_agent_id"])
        if session is None or not session["resumable"]:
            return self._to_spawn(job, token, now, wake.RESUME_FAILED, "no resumable session")
        if wake.is_stale(session, now, self.settings.session_stale):
            return self._to_spawn(job, token, now, wake.SESSION_STALE, "session is stale")
        failures = self.bridge.store.read(lambda c: trigger_store.runtime_failures_since(
            c, self.bridge.workspace, job["target_agent_id"], now - round(self.settings.crash_loop_window * 1000)))
        if failures >= self.settings.crash_loop_failures:
            window = f"{self.settings.crash_loop_window / 60:g} min"
            return self._to_spawn(job, token, now, wake.CRASH_LOOP, f"{failures} runtime failures in {window}")
        if not wake.trusted_session_id(session["runtime_kind"], session["session_id"]):
            return self._to_spawn(job, token, now, wake.RESUME_FAILED,
                                  f"session id {session['session_id']!r} is not a {session['runtime_kind']} session id")
        template = self._template(session, "resume")
        if not template:
            return self._to_spawn(job, token, now, wake.RESUME_FAILED,
                                  f"no resume command for runtime {session['runtime_kind']!r}")
        self._hold_claim(job, token, self.settings.command_timeout)
        argv = render(template, self._values(job, session["session_id"], job["prompt"]))
        baseline = self.bridge.store.read(lambda c: message_store.get_cursor(c, job["thread_id"],
                                                                             job["target_agent_id"]))
        started = self.bridge.clock()
        result = run_command(argv, timeout=self.settings.command_timeout, cwd=session["cwd"],
                             env=self._command_env(job, session), cancel=self._stopping)
        now = self.bridge.clock()  # the command may have run for minutes: record its outcome at its end
        if result.interrupted:  # shutting down: release the claim (no verdict) so the next worker takes it at once
            return self._update(job, token, now, {}, attempt=("resume", "interrupted", None, result.detail))
        if result.ok and self._acked(job, baseline, started - 1):
            return self._finish(job, token, now, "resumed", None, f"{result.detail}; the agent read and acknowledged",
                                stage="resume")
        if result.ok:  # exit 0 alone proves nothing: a CLI that denied the bridge tools exits 0 too
            result = CommandResult(False, "exit 0 without reading or acknowledging the thread")
        self.bridge.store.write(lambda c: trigger_store.record_runtime_failure(
            c, self.bridge.workspace, job["target_agent_id"], "resume", now))
        attempts = job["resume_attempts"] + 1
        if attempts < self.settings.resume_attempts:
            return self._update(job, token, now, {"resume_attempts": attempts, "next_attempt_at": now + 2000},
                                attempt=("resume", "failed", wake.RESUME_FAILED, result.detail),
                                audit_reason=wake.RESUME_FAILED)
        return self._to_spawn(job, token, now, wake.RESUME_FAILED, result.detail, resume_attempts=attempts)

    def _to_spawn(self, job: dict[str, Any], token: str, now: int, code: str, detail: str,
                  resume_attempts: int | None = None) -> str:
        changes: dict[str, Any] = {"status": "spawn", "next_attempt_at": now}
        if resume_attempts is not None:
            changes["resume_attempts"] = resume_attempts
        return self._update(job, token, now, changes, attempt=("resume", "skipped" if resume_attempts is None
                                                               else "failed", code, detail), audit_reason=code)

    def _spawn(self, job: dict[str, Any], token: str, now: int) -> str:
        session = self._session(job["target_agent_id"])
        kind = session["runtime_kind"] if session else "generic"
        template = self._template(session, "spawn")
        if not template:
            return self._finish(job, token, now, "failed", wake.SPAWN_FAILED, f"no spawn command for runtime {kind!r}")
        thread = self.bridge.store.read(lambda c: thread_store.get_thread(c, job["thread_id"]))
        summary = self.bridge.store.read(lambda c: build_summary(c, thread, 50))["summary"]
        prompt = f"{job['prompt']}\n\nThread summary:\n{summary}"
        plan = AgentPlan.of(session)
        session_id = _spawned_session_id(kind, plan, template, job["trigger_id"])
        argv = render(template, self._values(job, session_id, prompt))
        if plan is not None:  # the pane gets exactly the agent's environment, not the tmux server's
            argv = isolated(argv, self._command_env(job, session))
        baseline = self.bridge.store.read(lambda c: message_store.get_cursor(c, job["thread_id"],
                                                                             job["target_agent_id"]))
        cwd = session["cwd"] if session else None
        self._hold_claim(job, token, 0)
        started = self.bridge.clock()
        try:
            pane_id = self.tmux.new_window(self.settings.workspace_tmux_session, job["target_agent_id"], argv,
                                           cwd=cwd, env=None if plan else self._command_env(job, session))
        except TmuxError as exc:
            self.bridge.store.write(lambda c: trigger_store.record_runtime_failure(
                c, self.bridge.workspace, job["target_agent_id"], "spawn", now))
            return self._finish(job, token, now, "failed", wake.SPAWN_FAILED, str(exc), stage="spawn")

        runtime_service.register_spawned(self.bridge, session, agent_id=job["target_agent_id"], kind=kind,
                                         session_id=session_id, trigger_id=job["trigger_id"], pane_id=pane_id,
                                         cwd=cwd, now=started)
        return self._update(job, token, now, {
            "status": "awaiting_ack", "ack_stage": "spawn", "delivered_at": started, "ack_cursor_seq": baseline,
            "ack_deadline": started + int(self.settings.spawn_ack_timeout * 1000), "tmux_target": pane_id,
            "next_attempt_at": started + self._ack_recheck_ms},
            attempt=("spawn", "started", None, f"started in {pane_id}"))

    def _learn_session_id(self, job: dict[str, Any], stage: str) -> None:
        """For a runtime that names its own sessions (Codex), record the session's id once the agent acted: the
        newest session started since the spawn, or since the launch."""
        session = self._session(job["target_agent_id"])
        plan = AgentPlan.of(session)
        if session is None or plan is None or plan.chooses_session_id or \
                (wake.trusted_session_id(session["runtime_kind"], session["session_id"]) and stage != "spawn"):
            return
        since = job["delivered_at"] / 1000 if stage == "spawn" else float(plan.extra.get("launched_at", 0))
        try:
            found = discover_session_id(session["runtime_kind"], plan, since)
        except (OSError, ValueError, KeyError) as exc:  # the ack stands; the id is learned at a later wake
            log.warning("session id not learned: %s", exc, extra={"event": "session_id_unknown",
                                                                  "agent_id": job["target_agent_id"]})
            return
        if found:
            runtime_service.learn_session_id(self.bridge, WORKER, agent_id=job["target_agent_id"],
                                             before=session["session_id"], session_id=found,
                                             thread_id=job["thread_id"], trigger_id=job["trigger_id"])

    # ------------------------------------------------------------------------------------------- helpers
    def _values(self, job: dict[str, Any], session_id: str, prompt: str) -> dict[str, str]:
        return {"session_id": session_id, "prompt": prompt, "agent_id": job["target_agent_id"],
                "thread_id": job["thread_id"], "trigger_id": job["trigger_id"]}

    def _template(self, session: dict[str, Any] | None, step: str) -> list[str] | None:
        """The agent's own argv template for `step` (its registered profile), else its runtime kind's."""
        plan = AgentPlan.of(session)
        if plan is not None:
            return getattr(plan, step) or None
        return self.templates.get(session["runtime_kind"] if session else "generic", {}).get(step)

    def _command_env(self, job: dict[str, Any], session: dict[str, Any] | None) -> dict[str, str]:
        """The agent's own environment (from its registration) plus the trigger's context; not the bridge's."""
        plan = AgentPlan.of(session)
        context = {"BRIDGE_URL": self.url, "BRIDGE_AGENT_ID": job["target_agent_id"],
                   "BRIDGE_THREAD_ID": job["thread_id"], "BRIDGE_TRIGGER_ID": job["trigger_id"],
                   "BRIDGE_WORKSPACE": self.bridge.workspace}
        return command_env(plan.env if plan else {}, context)

    def _dispatch_start(self, job: dict[str, Any]) -> int:
        """When the wait began: the commit of the message that caused an automatic wake, else the job's creation."""
        if job["trigger_seq"] is None:
            return job["created_at"]
        found = self.bridge.store.query(lambda c: message_store.created_at(c, job["thread_id"], job["trigger_seq"]))
        return job["created_at"] if found is None else found

    def _hold_claim(self, job: dict[str, Any], token: str, command_s: float) -> None:
        """Right before a side effect (typing, starting a window, running a command): push the lease a full lease
        (plus the command's own timeout) past now, or raise StaleClaim when another worker has taken the job over
        meanwhile (this worker's claim lapsed while it was busy elsewhere). Nothing is typed or run twice."""
        until = self.bridge.clock() + int((command_s + self.settings.worker_lease) * 1000)

        def work(conn: Connection) -> None:
            if not trigger_store.extend_lease(conn, job["trigger_id"], token, until):
                raise StaleClaim(job["trigger_id"])

        self.bridge.store.write(work)

    def _update(self, job: dict[str, Any], token: str, now: int, changes: dict[str, Any], *,
                attempt: tuple[str, str, str | None, str | None] | None = None,
                audit_reason: str | None = None) -> str:
        status = changes.get("status", job["status"])

        def work(conn: Connection) -> None:
            if not trigger_store.update_claimed(conn, job["trigger_id"], token, {**changes, "updated_at": now}):
                raise StaleClaim(job["trigger_id"])
            if attempt is not None:
                stage, outcome, code, detail = attempt
                trigger_store.insert_attempt(conn, {
                    "trigger_id": job["trigger_id"], "thread_id": job["thread_id"],
                    "target_agent_id": job["target_agent_id"], "stage": stage, "outcome": outcome,
                    "reason_code": code, "detail": detail, "started_at": now, "finished_at": self.bridge.clock()})
            if audit_reason is not None or status in wake.TERMINAL:
                audit(conn, self.bridge, WORKER, f"trigger_{status}", thread_id=job["thread_id"],
                      outcome="failed" if status == "failed" else "ok", reason=audit_reason,
                      details={"trigger_id": job["trigger_id"], "target_agent_id": job["target_agent_id"],
                               "stage_detail": attempt[3] if attempt else None})

        self.bridge.store.write(work)
        if attempt is not None:
            self.bridge.events.emit("trigger_attempt", trigger_id=job["trigger_id"], outcome=attempt[1],
                                    code=attempt[2])
        if status in wake.TERMINAL:
            self.bridge.events.emit("trigger_finished", trigger_id=job["trigger_id"], status=status,
                                    started_at=self._dispatch_start(job), thread_id=job["thread_id"])
        log.info("trigger %s", status, extra={"event": f"trigger_{status}", "trigger_id": job["trigger_id"],
                                              "thread_id": job["thread_id"], "agent_id": job["target_agent_id"]})
        return status

    def _finish(self, job: dict[str, Any], token: str, now: int, status: str, code: str | None, detail: str,
                *, stage: str | None = None, extra: dict[str, Any] | None = None) -> str:
        changes = {"status": status, "result_code": code, "last_error": detail if status == "failed" else None,
                   "finished_at": now, **(extra or {})}
        return self._update(job, token, now, changes, attempt=(stage or _stage(job), status, code, detail),
                            audit_reason=code)


def _stage(job: dict[str, Any]) -> str:
    """The attempt stage of a job's current step: tmux delivery (queued, awaiting its ack), resume or spawn."""
    return {"queued": "tmux", "awaiting_ack": "tmux"}.get(job["status"], job["status"])


def _spawned_session_id(kind: str, plan: AgentPlan | None, template: list[str], trigger_id: str) -> str:
    """The id a spawned session is registered under: for Claude Code and Codex, a UUID the bridge passes at spawn
    (resumable), or "" when the runtime names its own (learned once the session acts) or the command takes none;
    for other runtimes a label (never resumed)."""
    if kind not in wake.UUID_RUNTIMES:
        return f"spawned-{trigger_id}"
    takes_id = any("{session_id}" in arg for arg in template)
    return str(uuid.uuid4()) if takes_id and (plan is None or plan.chooses_session_id) else ""

