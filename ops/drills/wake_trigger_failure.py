"""Drill for runbooks/wake-trigger-failure.md: the agent's pane dies and its fallbacks fail; the trigger is
dead-lettered; the operator relaunches the agent and retries the trigger."""

from __future__ import annotations

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill


@drill("wake-trigger-failure", "Wake trigger failure: pane dead, fallbacks fail, dead letter",
       injects="tmux kill-pane of the managed agent, with a failing resume command and no spawn command configured",
       verifies="the job is dead-lettered (bridge_trigger_jobs{failed}, RESUME_FAILED attempts, trigger_failed log "
                "line); triggers --dead and runtime list explain it; after runtime launch + trigger-retry it is "
                "delivered and acknowledged, the dead-letter list is empty")
def run(ctx: DrillContext) -> None:
    server, _, exe, thread_id = ctx.set_up_with_standin("a stand-in reviewer in a managed pane; its resume command is "
                                                        "broken and no spawn is configured",
                                                        "wake failure", resume_fails=True, spawn=False)
    pane = ctx.panes["reviewer"]

    ctx.fault("the reviewer's tmux pane is killed (the agent crashed, or someone closed its window)", pane=pane)
    ctx.tmux.run("kill-pane", "-t", pane)
    seq = ctx.post(exe, thread_id, "fix pushed, please re-review")["seq"]

    ctx.step("1. Detect: a failed trigger job (dead letter)")
    job = ctx.wait_for(lambda: next((j for j in ctx.jobs(thread_id) if j["status"] == "failed"), None),
                       "the reviewer's trigger ends in the dead letter", 30)
    text = ctx.metrics()
    ctx.check_metric("bridge_trigger_jobs", 1, text=text, status="failed")
    resume_failed = ctx.metric("bridge_trigger_attempts_total", text=text, result="RESUME_FAILED")
    ctx.check(resume_failed is not None and resume_failed >= 1, "bridge_trigger_attempts_total{result="
              "\"RESUME_FAILED\"} rises", value=resume_failed)
    logged = server.log_events("trigger_failed")
    ctx.check(len(logged) == 1 and logged[0]["trigger_id"] == job["trigger_id"], "JSON log line: event "
              "trigger_failed with the trigger id", line=logged[:1])

    ctx.step("2. Diagnose: the dead letter and its attempts, the runtime registry")
    dead = ctx.bridge("triggers", "--db", DB, "--dead", "--json").json()["triggers"]
    ctx.check([d["trigger_id"] for d in dead] == [job["trigger_id"]] and dead[0]["result_code"] == "SPAWN_FAILED",
              "bridge triggers --dead lists it, result SPAWN_FAILED", dead=dead)
    steps = [(a["stage"], a["outcome"], a["reason_code"]) for a in dead[0]["attempts"]]
    ctx.check(("resume", "failed", "RESUME_FAILED") in steps and steps[-1] == ("spawn", "failed", "SPAWN_FAILED"),
              "the attempts tell the story: resume failed, then no spawn command (a pane found gone at delivery time "
              "adds TARGET_NOT_FOUND first)", attempts=steps)
    reviewer = ctx.runtime("reviewer")
    ctx.check(reviewer["status"] == "offline", "bridge runtime list: the reviewer is offline", runtime=reviewer)

    ctx.step("3. Recover: relaunch the agent in a managed pane, retry the dead letter")
    new_pane = ctx.launch_standin("reviewer")
    retried = ctx.bridge("trigger-retry", "--db", DB, "--trigger-id", job["trigger_id"], "--reason",
                         "agent relaunched after its pane died", "--json").json()
    ctx.check(retried["job_status"] == "queued", "the retry goes to tmux delivery (queued)", retry=retried)

    ctx.step("4. Verify")
    ctx.wait_delivered(job["trigger_id"], new_pane, "the retried trigger is delivered")
    jobs = ctx.bridge("triggers", "--db", DB, "--thread-id", thread_id, "--json").json()["triggers"]
    ctx.check([(j["trigger_id"], j["status"]) for j in jobs] == [(job["trigger_id"], "delivered")],
              "bridge triggers: the retried job is delivered", jobs=[(j["trigger_id"], j["status"]) for j in jobs])
    dead = ctx.bridge("triggers", "--db", DB, "--dead", "--json").json()["triggers"]
    ctx.check(dead == [], "bridge triggers --dead is empty")
    reviewer = ctx.participant(thread_id, "reviewer")
    ctx.check(reviewer["unread"] == 0 and reviewer["last_read_seq"] == seq, "inspect-thread: the reviewer read the "
              "message", reviewer=reviewer)
    ctx.check_metric("bridge_trigger_jobs", 0, status="failed")

