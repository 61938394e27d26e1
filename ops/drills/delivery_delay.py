"""Drill for runbooks/delivery-delay.md: the supervisor worker died; addressed messages wait; restart it."""

from __future__ import annotations

import time

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

STALE_AFTER = 2.0  # seconds without a worker tick that the drill treats as "the worker is down" (poll is 200 ms)


def tick_age(ctx: DrillContext) -> float | None:
    return ctx.http("GET", "/health", record=False).body["worker"]["last_tick_age_seconds"]


def reviewer_job(ctx: DrillContext, thread_id: str, seq: int) -> dict | None:
    jobs = [j for j in ctx.jobs(thread_id) if j["target_agent_id"] == "reviewer" and j["trigger_seq"] == seq]
    return jobs[0] if jobs else None


@drill("delivery-delay", "Message delivery delay: the supervisor worker is down",
       injects="kill -9 of the `bridge worker` process (API and worker run split)",
       verifies="/health worker age and bridge_worker_last_tick_timestamp_seconds go stale; no trigger for the new "
                "message; inspect-thread shows unread; after `bridge worker` restarts the message is delivered and "
                "acked")
def run(ctx: DrillContext) -> None:
    ctx.step("Set-up: the API and the worker as two processes; a stand-in reviewer in a managed tmux pane")
    runtimes = {"BRIDGE_RUNTIMES_FILE": str(ctx.standin_runtimes())}
    ctx.serve("server", worker=False, env=runtimes)
    worker = ctx.worker("worker", env=runtimes)
    coord, exe = ctx.token("coordinator", "coordinator"), ctx.token("executioner")
    pane = ctx.launch_standin("reviewer")
    thread_id = ctx.new_thread(coord, "delivery delay")
    first = ctx.post(exe, thread_id, "fix pushed, please re-review")["seq"]
    job = ctx.wait_for(lambda: (j := reviewer_job(ctx, thread_id, first)) and j["status"] == "delivered" and j,
                       "baseline: the reviewer is woken and acknowledges", 20)
    ctx.observe("baseline delivery", trigger_id=job["trigger_id"])

    ctx.fault("kill -9 the worker process", pid=worker.pid)
    ctx.run(["kill", "-9", str(worker.pid)])
    ctx.wait_for(lambda: not worker.alive(), "the worker process is gone", 10)
    posted_at = time.time()
    second = ctx.post(exe, thread_id, "second fix pushed, please re-review")["seq"]

    ctx.step("1. Detect: the worker's heartbeat ages, addressed messages stay unread")
    age = ctx.wait_for(lambda: (a := tick_age(ctx)) is not None and a > STALE_AFTER and a, "the worker tick is stale",
                       15)
    health = ctx.http("GET", "/health")
    ctx.check(health.body["worker"]["last_tick_age_seconds"] >= age, "/health: worker.last_tick_age_seconds grows",
              body=health.body)
    last_tick = ctx.metric("bridge_worker_last_tick_timestamp_seconds")
    ctx.check(last_tick is not None and time.time() - last_tick > STALE_AFTER,
              "bridge_worker_last_tick_timestamp_seconds is stale", value=last_tick, now=time.time())
    ctx.check(reviewer_job(ctx, thread_id, second) is None, "no trigger was created for the new message",
              waited_seconds=round(time.time() - posted_at, 2))

    ctx.step("2. Diagnose: who has not read what")
    reviewer = ctx.participant(thread_id, "reviewer")
    ctx.check(reviewer["unread"] >= 1 and reviewer["last_read_seq"] < second, "inspect-thread: the reviewer has "
              "unread messages", reviewer=reviewer)
    jobs = ctx.bridge("triggers", "--db", DB, "--thread-id", thread_id, "--json").json()["triggers"]
    ctx.check([j["status"] for j in jobs] == ["delivered"], "bridge triggers: only the baseline job exists",
              jobs=[(j["trigger_id"], j["status"]) for j in jobs])

    ctx.step("3. Recover: start the worker again")
    ctx.worker("worker-restarted", env=runtimes)

    ctx.step("4. Verify: the waiting message is delivered and acknowledged")
    job = ctx.wait_for(lambda: (j := reviewer_job(ctx, thread_id, second)) and j["status"] == "delivered" and j,
                       "the reviewer is woken for the waiting message", 20)
    ctx.wait_pane(pane, f"STANDIN ACKED trigger={job['trigger_id']}", 10)
    ctx.observe("delivered after the restart", trigger_id=job["trigger_id"],
                message_to_delivered_seconds=round(job["finished_at"] / 1000 - posted_at, 3))
    age = ctx.wait_for(lambda: (a := tick_age(ctx)) is not None and a < STALE_AFTER and a is not None,
                       "the worker tick is fresh", 10)
    ctx.check_metric("bridge_trigger_jobs", 2, status="delivered")
    reviewer = ctx.participant(thread_id, "reviewer")
    ctx.check(reviewer["unread"] == 0 and reviewer["last_read_seq"] == second, "the reviewer read everything",
              reviewer=reviewer)

