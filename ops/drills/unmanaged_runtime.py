"""Drill for runbooks/unmanaged-runtime.md: an agent of the autonomous lane runs outside tmux management, so wakes
go to its resume command instead of its terminal; the operator relaunches it managed."""

from __future__ import annotations

import subprocess

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill


@drill("unmanaged-runtime", "Unmanaged runtime in the autonomous lane",
       injects="the stand-in reviewer started by hand outside tmux, heartbeating as unmanaged and resumable",
       verifies="trigger_participant answers fallback_required/resume_session and the job is resumed, not "
                "delivered; runtime list and triggers show it; after stopping it and `bridge runtime launch` the "
                "registry is managed and a trigger is typed into the pane and acknowledged")
def run(ctx: DrillContext) -> None:
    ctx.step("Set-up: a bridge whose generic runtime resumes and spawns the stand-in agent")
    ctx.serve(env={"BRIDGE_RUNTIMES_FILE": str(ctx.standin_runtimes())})
    coord = ctx.token("coordinator", "coordinator")
    ctx.token_file("reviewer")
    thread_id = ctx.new_thread(coord, "unmanaged runtime")

    ctx.fault("the reviewer was started by hand in a plain terminal (no tmux pane): it heartbeats as unmanaged")
    unmanaged = ctx.start("reviewer-plain-terminal", ctx.standin_argv("reviewer"), stdin=subprocess.PIPE)
    ctx.wait_for(lambda: "STANDIN READY" in unmanaged.log_text(), "the unmanaged reviewer heartbeated", 20)

    ctx.step("1. Detect: the wake goes to the resume fallback instead of the agent's terminal")
    decision = ctx.ok("trigger_participant", coord, thread_id=thread_id, target_agent_id="reviewer",
                      reason="please review the fix")
    ctx.check((decision["action"], decision["fallback_action"], decision["job_status"], decision["management_mode"])
              == ("fallback_required", "resume_session", "resume", "unmanaged"), "trigger_participant: "
              "fallback_required / resume_session (management_mode unmanaged)", decision=decision)
    ctx.wait_for(lambda: ctx.job(decision["trigger_id"])["status"] == "resumed",
                 "the trigger ran the resume command (a second process on the agent's session)", 20)
    resumed = ctx.metric("bridge_trigger_jobs", status="resumed")
    delivered = ctx.metric("bridge_trigger_jobs", status="delivered")
    ctx.check((resumed, delivered) == (1, 0), "bridge_trigger_jobs: resumed rises, delivered does not",
              resumed=resumed, delivered=delivered)

    ctx.step("2. Diagnose: the runtime registry and the trigger list")
    reviewer = ctx.runtime("reviewer")
    ctx.check(reviewer["management_mode"] == "unmanaged" and reviewer["tmux_target"] is None,
              "bridge runtime list: the reviewer is unmanaged, without a tmux target", runtime=reviewer)
    jobs = ctx.bridge("triggers", "--db", DB, "--thread-id", thread_id, "--json").json()["triggers"]
    ctx.check([(j["action"], j["status"]) for j in jobs] == [("fallback_required", "resumed")],
              "bridge triggers: action fallback_required, status resumed", jobs=[(j["trigger_id"], j["action"],
                                                                                  j["status"]) for j in jobs])

    ctx.step("3. Recover: stop the hand-started agent, relaunch it managed")
    ctx.run(["kill", str(unmanaged.pid)])
    ctx.wait_for(lambda: not unmanaged.alive(), "the hand-started agent exited", 10)
    pane = ctx.launch_standin("reviewer")

    ctx.step("4. Verify: the registry says managed, and a wake is typed into the pane and acknowledged")
    reviewer = ctx.runtime("reviewer")
    ctx.check(reviewer["management_mode"] == "managed" and reviewer["tmux_target"] == pane,
              "bridge runtime list: managed, tmux target = the new pane", runtime=reviewer)
    decision = ctx.ok("trigger_participant", coord, thread_id=thread_id, target_agent_id="reviewer",
                      reason="please review again")
    ctx.check((decision["action"], decision["job_status"]) == ("trigger_runtime", "queued"),
              "trigger_participant: trigger_runtime / queued", decision=decision)
    ctx.wait_delivered(decision["trigger_id"], pane, "the trigger is delivered")
    ctx.check_metric("bridge_trigger_jobs", 1, status="delivered")

