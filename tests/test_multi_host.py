"""Workers on many hosts sharing one database: each delivers only to the runtimes registered on its own host (or on
no host), and concurrent workers never claim one job twice.

- through the services and stores, on both stores: a job for an agent on host B is left by host A's worker (not
  claimed, not attempted, not waited for) and claimed by host B's; a runtime with no host is served by any; the
  host a runtime is registered on is the heartbeat's `host_id`, else the registering process's own (heartbeats,
  launches, spawns); threads racing
  `claim_due` through two stores on one database never both claim a job, and a worker whose claim was taken over
  has its late result refused;
- on PostgreSQL, with real processes: two `bridge serve` (no worker) and two `bridge worker --host-id` processes,
  each host with its own tmux server and a stand-in agent in it; posts through both servers get gapless seqs and
  every wake is delivered once, by the worker of the agent's host, and acknowledged by that agent.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from conftest import call_as
from helpers import create_thread

from bridge.domain.models import HeartbeatSessionInput
from bridge.services import runtimes as runtime_service
from bridge.services.sessions import heartbeat_session
from bridge.services.triggers import force_trigger
from bridge.settings import Settings
from bridge.store import control as control_store
from bridge.store import triggers as trigger_store
from bridge.testing.client import new_thread, post, read_thread
from bridge.testing.processes import wait_until
from bridge.testing.stack import Stack
from bridge.wiring import Parts, build
from bridge.worker.supervisor import Supervisor
from bridge.worker.tmux import Tmux

OPERATOR = call_as("human:ops", "operator", session_id="cli")
COORD = call_as("coord", "coordinator")


def register(parts: Parts, agent_id: str, host_id: str | None = None) -> None:
    """An unmanaged runtime heartbeat of `agent_id` through `parts` (its host: `host_id`, else the process's)."""
    heartbeat_session(parts.bridge, call_as(agent_id), HeartbeatSessionInput(
        session_id=f"{agent_id}-s1", runtime="generic", status="idle", resumable=False, host_id=host_id))


def job_for(parts: Parts, agent_id: str) -> str:
    """An operator's trigger of `agent_id` in a new thread; its id."""
    thread_id = create_thread(parts, COORD, (agent_id,))
    return str(force_trigger(parts.bridge, OPERATOR, thread_id, agent_id, "host test")["trigger_id"])


def claim(parts: Parts, token: str, *, lease_ms: int = 60_000, now: int | None = None, limit: int = 16) -> list[str]:
    """What the worker of `parts`' host claims now under `token` (ids)."""
    at = parts.bridge.clock() if now is None else now
    host, workspace = parts.bridge.settings.local_host_id, parts.bridge.workspace
    jobs = parts.bridge.store.write(lambda c: trigger_store.claim_due(c, workspace, at, lease_ms, token, limit,
                                                                      host=host))
    return [job["trigger_id"] for job in jobs]


def host_of(parts: Parts, agent_id: str) -> str | None:
    session = parts.bridge.store.read(lambda c: control_store.get_session(c, "default", agent_id))
    return None if session is None else session["host_id"]


def test_a_runtime_is_registered_on_the_heartbeats_host_else_on_the_registering_process(make_parts, private_tmux):
    host_a = make_parts(host_id="host-a")
    register(host_a, "alice")
    register(host_a, "bob", host_id="host-b")  # an agent may say where it runs
    runtime_service.launch(host_a.bridge, OPERATOR, private_tmux, agent_id="carol", kind="generic",
                           argv=["sleep", "30"], session_id="carol-s1", tmux_session=None, cwd=None, resumable=False)
    runtime_service.register_spawned(host_a.bridge, None, agent_id="dave", kind="generic", session_id="",
                                     trigger_id="trg_x", pane_id="%9", cwd=None, now=host_a.bridge.clock())
    assert {r["agent_id"]: r["host_id"] for r in runtime_service.list_runtimes(host_a.bridge)} == \
        {"alice": "host-a", "bob": "host-b", "carol": "host-a", "dave": "host-a"}
    with pytest.raises(ValueError):  # an identifier, as every other id
        HeartbeatSessionInput(session_id="s", runtime="generic", status="idle", resumable=False, host_id="a b")


def test_a_job_for_an_agent_on_host_b_is_left_by_host_a_and_claimed_by_host_b(make_parts):
    host_a, host_b = make_parts(host_id="host-a"), make_parts(host_id="host-b")
    register(host_b, "bob")
    trigger_id = job_for(host_a, "bob")
    workspace = host_a.bridge.workspace
    assert host_a.bridge.store.query(lambda c: trigger_store.next_due_at(c, workspace, host="host-a")) is None
    assert not host_a.bridge.store.read(lambda c: trigger_store.any_due(c, workspace, host_a.bridge.clock(),
                                                                        host="host-a"))
    before = host_a.bridge.store.read(lambda c: trigger_store.get_job(c, trigger_id))
    report = Supervisor(host_a.bridge, Tmux("bridge-test-no-such-server")).tick()  # host A's worker: a whole pass
    assert report.processed == []
    assert host_a.bridge.store.read(lambda c: trigger_store.get_job(c, trigger_id)) == before  # untouched
    assert host_a.bridge.store.read(lambda c: trigger_store.attempts(c, trigger_id)) == []  # never an attempt

    assert claim(host_b, "worker-b") == [trigger_id]


def test_a_runtime_with_no_host_is_served_by_any_worker(make_parts):
    host_a, host_b = make_parts(host_id="host-a"), make_parts(host_id="host-b")
    register(host_a, "carol")
    host_a.bridge.store.write(lambda c: control_store.set_session_fields(c, "default", "carol", host_id=None))
    unregistered = job_for(host_a, "dave")  # no runtime at all: a spawn, by any worker
    registered_before = job_for(host_a, "carol")  # registered before hosts were recorded
    assert sorted(claim(host_b, "worker-b", lease_ms=1)) == sorted([unregistered, registered_before])
    assert sorted(claim(host_a, "worker-a", now=host_a.bridge.clock() + 10)) == \
        sorted([unregistered, registered_before])  # B's lease lapsed: A takes them


def test_workers_racing_for_jobs_through_two_stores_never_both_claim_one(make_parts):
    host_a, host_b = make_parts(host_id="host-a"), make_parts(host_id="host-b")
    jobs = {job_for(host_a, f"agent-{n}") for n in range(12)}  # no runtimes: every worker may take each
    claimed: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def race(parts: Parts, name: str) -> None:
        start.wait()
        mine: list[str] = []
        for round_ in range(6):  # two at a time: the racers meet on the same rows
            mine += claim(parts, f"{name}-{round_}", limit=2)
        claimed[name] = mine

    racers = [threading.Thread(target=race, args=(parts, f"{parts.bridge.settings.host_id}-{n}"))
              for parts in (host_a, host_b) for n in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    every = [trigger_id for mine in claimed.values() for trigger_id in mine]
    assert len(claimed) == 4
    assert Counter(every) == Counter(jobs), claimed  # each job once, by one worker


def test_a_worker_whose_claim_was_taken_over_by_another_worker_has_its_late_result_refused(make_parts):
    host_a, host_b = make_parts(host_id="host-a"), make_parts(host_id="host-b")
    trigger_id = job_for(host_a, "erin")
    now = host_a.bridge.clock()
    assert claim(host_a, "stale-a", lease_ms=1000, now=now) == [trigger_id]
    assert claim(host_b, "fresh-b", now=now + 500) == []  # held
    assert claim(host_b, "fresh-b", now=now + 1000) == [trigger_id]  # lapsed: taken over
    late = {"status": "failed", "updated_at": now + 1001}
    assert not host_a.bridge.store.write(lambda c: trigger_store.update_claimed(c, trigger_id, "stale-a", late))
    assert not host_a.bridge.store.write(lambda c: trigger_store.extend_lease(c, trigger_id, "stale-a", now + 9000))
    done = {"status": "delivered", "updated_at": now + 1002}
    assert host_b.bridge.store.write(lambda c: trigger_store.update_claimed(c, trigger_id, "fresh-b", done))
    job = host_b.bridge.store.read(lambda c: trigger_store.get_job(c, trigger_id))
    assert (job["status"], job["claim_token"]) == ("delivered", None)



def test_on_postgresql_a_claim_skips_a_job_another_worker_holds_instead_of_waiting(postgres_url: str):
    parts = build(Settings.load({"db": postgres_url, "host_id": "host-a"}, env={}))
    try:
        held, free = job_for(parts, "agent-1"), job_for(parts, "agent-2")
        with psycopg.connect(postgres_url) as other:  # another worker, mid-claim: the row is locked
            other.execute("SELECT 1 FROM trigger_jobs WHERE trigger_id = %s FOR UPDATE", (held,))
            with ThreadPoolExecutor(1) as pool:
                claiming = pool.submit(claim, parts, "worker-a")
                try:
                    assert claiming.result(timeout=3) == [free]  # at once, without the held job
                finally:
                    other.rollback()  # unblocks a claim that waited, so a failure ends
        assert claim(parts, "worker-a2") == [held]  # released: claimable again
    finally:
        parts.close()

# --- real processes on PostgreSQL: two hosts, each with its own server, worker, tmux server and agent ---------------

ROUNDS = 3
POSTS_PER_SERVER = 3


def test_two_hosts_each_wake_only_their_own_agent_once_per_job(tmp_path: Path, postgres_url: str):
    with Stack(tmp_path / "a", db=postgres_url, tmux_prefix="bridge-host-a") as a, \
            Stack(tmp_path / "b", db=postgres_url, tmux_prefix="bridge-host-b") as b:
        hosts = {"agent-a": a, "agent-b": b}
        for name, stack in (("a", a), ("b", b)):  # the first server creates the schema
            stack.serve(f"server-{name}", "--host-id", f"host-{name}")  # no worker in the serving process
        for name, stack in (("a", a), ("b", b)):
            stack.worker(f"worker-{name}", "--host-id", f"host-{name}")
        panes = {agent: stack.launch_standin(agent) for agent, stack in hosts.items()}  # heartbeats via its server
        assert {row["agent_id"]: row["host_id"] for row in a.rows("SELECT agent_id, host_id FROM sessions")} == \
            {"agent-a": "host-a", "agent-b": "host-b"}

        with a.client(a.token("coord", "coordinator")) as coord:
            thread_id = new_thread(coord, ["agent-a", "agent-b", "exec"], title="two hosts")
        exec_token = a.token("exec")

        def post_through(stack: Stack) -> list[int]:
            with stack.client(exec_token) as client:
                return [int(post(client, thread_id, f"work item {n} via {stack.workdir.name}")["seq"])
                        for n in range(POSTS_PER_SERVER)]

        def settled(latest: int) -> bool:
            cursors = dict(a.query("SELECT agent_id, last_read_seq FROM read_cursors WHERE thread_id = ?",
                                   (thread_id,)))
            open_jobs = a.query("SELECT COUNT(*) FROM trigger_jobs WHERE thread_id = ? AND status NOT IN"
                                " ('delivered', 'resumed', 'spawned', 'failed')", (thread_id,))[0][0]
            return all(cursors.get(agent) == latest for agent in hosts) and open_jobs == 0

        seqs: list[int] = []
        for _ in range(ROUNDS):  # each round wakes both agents again
            with ThreadPoolExecutor(2) as pool:  # through both servers at once
                posted = [seq for got in pool.map(post_through, (a, b)) for seq in got]
            seqs += posted
            assert wait_until(functools.partial(settled, max(posted)), 60, 0.1), \
                (a.rows("SELECT * FROM trigger_jobs"), a.rows("SELECT * FROM trigger_attempts"))
        with b.client(exec_token) as reader:
            read_back = [m["seq"] for m in read_thread(reader, thread_id)]
        assert read_back == list(range(1, len(read_back) + 1)) and sorted(seqs) == read_back[-len(seqs):]  # gapless

        jobs = a.rows("SELECT trigger_id, target_agent_id, status FROM trigger_jobs WHERE thread_id = ?",
                      (thread_id,))
        woken = Counter(job["target_agent_id"] for job in jobs)
        assert set(woken) == set(hosts) and min(woken.values()) >= ROUNDS, woken
        for job in jobs:
            trigger_id, agent = job["trigger_id"], job["target_agent_id"]
            own, other = hosts[agent], hosts["agent-b" if agent == "agent-a" else "agent-a"]
            assert job["status"] == "delivered", job
            outcomes = [row[0] for row in a.query("SELECT outcome FROM trigger_attempts WHERE trigger_id = ?"
                                                  " ORDER BY attempt_id", (trigger_id,))]
            assert outcomes == ["typed", "delivered"], (job, outcomes)  # typed once, acknowledged once
            audited = a.query("SELECT COUNT(*) FROM audit_events WHERE operation = 'trigger_delivered'"
                              " AND details LIKE ?", (f"%{trigger_id}%",))[0][0]
            assert audited == 1, job
            screen = own.tmux.capture(panes[agent])
            assert screen.count(f"[BRIDGE_TRIGGER id={trigger_id} ") == 1, screen  # in its own host's pane
            assert f"STANDIN ACKED trigger={trigger_id}" in screen  # the agent read and acknowledged
            other_agent = next(name for name, stack in hosts.items() if stack is other)
            assert trigger_id not in other.tmux.capture(panes[other_agent])
            assert trigger_id in (own.workdir / "logs" / f"worker-{own.workdir.name}.log").read_text()
            assert trigger_id not in (other.workdir / "logs" / f"worker-{other.workdir.name}.log").read_text()
