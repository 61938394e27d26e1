"""Drill for runbooks/human-input-collision.md: a human types in the agents' tmux session, so wakes are deferred
(OPERATOR_BUSY); the operator forces one through, the other times out (DEFER_TIMEOUT) into the resume fallback."""

from __future__ import annotations

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

SESSION = "bridge-default"
# Long enough that the operator's commands (a few CLI runs, seconds on a loaded machine) happen while the first
# trigger is still deferred: its DEFER_TIMEOUT fallback resumes the agent headless, which registers it unmanaged.
MAX_DEFER = {"BRIDGE_MAX_DEFER": "8s"}


@drill("human-input-collision", "Human-input collision / deferred timeout",
       injects="a real tmux client attached in a pty, typing continuously in the agents' session",
       verifies="the wake is deferred (OPERATOR_BUSY in triggers, metric, audit); list-clients shows the human; "
                "force-trigger delivers through the quiet window; the deferred one falls back with DEFER_TIMEOUT to "
                "resume; nothing typed under the human's hands; the reviewer read the message")
def run(ctx: DrillContext) -> None:
    _, _, exe, thread_id = ctx.set_up_with_standin("a stand-in reviewer in a managed pane (quiet window 1 s, re-check "
                                                   "200 ms, max defer 8 s)",
                                                   "human at the keyboard", MAX_DEFER)
    pane = ctx.panes["reviewer"]
    human_pane = ctx.tmux.run("new-window", "-d", "-P", "-F", "#{pane_id}", "-t", f"={SESSION}:", "-n", "human", "--",
                          "cat").strip()

    ctx.fault("a human attaches to the agents' tmux session and keeps typing (in their own window)")
    human = ctx.attach_human(SESSION, human_pane)
    human.keep_typing(0.15)
    seq = ctx.post(exe, thread_id, "fix pushed, please re-review")["seq"]

    ctx.step("1. Detect: the wake is deferred with OPERATOR_BUSY")
    waiting = ctx.wait_for(lambda: next((j for j in ctx.jobs(thread_id) if j["defer_reason"] == "OPERATOR_BUSY"),
                                        None), "the reviewer's trigger is deferred", 15)
    listed = ctx.bridge("triggers", "--db", DB, "--thread-id", thread_id, "--json").json()["triggers"]
    view = next(j for j in listed if j["trigger_id"] == waiting["trigger_id"])
    ctx.check(view["status"] == "queued" and view["defer_reason"] == "OPERATOR_BUSY", "bridge triggers: status "
              "queued, defer_reason OPERATOR_BUSY", job={k: view[k] for k in ("trigger_id", "status", "defer_reason")})
    busy = ctx.metric("bridge_trigger_attempts_total", result="OPERATOR_BUSY")
    ctx.check(busy is not None and busy >= 1, "bridge_trigger_attempts_total{result=\"OPERATOR_BUSY\"} rises",
              value=busy)

    ctx.step("2. Diagnose: who is attached and typing")
    clients = ctx.run(["tmux", "-L", ctx.tmux_socket, "list-clients", "-t", SESSION, "-F",
                       "#{client_pid} #{client_tty} #{client_activity}"]).stdout.split("\n")
    ctx.check(any(line.startswith(f"{human.pid} ") for line in clients), "tmux list-clients shows the human's "
              "client, with recent activity", clients=clients)

    ctx.step("3a. Urgent: force one trigger through the quiet window (audited)")
    forced = ctx.bridge("force-trigger", "--db", DB, "--thread-id", thread_id, "--agent-id", "reviewer", "--reason",
                        "release blocker: deliver now, human agreed", "--json").json()
    ctx.wait_delivered(forced["trigger_id"], pane, "the forced trigger is typed and acknowledged while the human "
                       "types")

    ctx.step("3b. Otherwise: the deferred trigger gives up after BRIDGE_MAX_DEFER and falls back to resume")
    job = ctx.wait_for(lambda: (j := ctx.job(waiting["trigger_id"]))["status"] in ("resumed", "spawned", "failed")
                       and j, "the deferred trigger reaches a terminal state", 20)
    ctx.check(job["status"] == "resumed", "it was resumed (the fallback), not typed under the human's hands",
              status=job["status"])
    attempts = ctx.rows("SELECT stage, outcome, reason_code FROM trigger_attempts WHERE trigger_id = ?"
                         " ORDER BY attempt_id", (waiting["trigger_id"],))
    codes = [a["reason_code"] for a in attempts]
    ctx.check("DEFER_TIMEOUT" in codes and "typed" not in [a["outcome"] for a in attempts],
              "its attempts: OPERATOR_BUSY deferrals, then DEFER_TIMEOUT, never typed", codes=codes)
    ctx.check_metric("bridge_trigger_attempts_total", 1, result="DEFER_TIMEOUT")

    ctx.step("3c. The human is done: detach their client")
    human.stop_typing()
    tty = next(line.split()[1] for line in clients if line.startswith(f"{human.pid} "))
    ctx.run(["tmux", "-L", ctx.tmux_socket, "detach-client", "-t", tty])
    ctx.wait_for(lambda: not ctx.tmux.run("list-clients", "-t", SESSION, "-F", "#{client_pid}").strip(),
                 "no client is attached any more", 10)

    ctx.step("4. Verify")
    listed = ctx.bridge("triggers", "--db", DB, "--thread-id", thread_id, "--json").json()["triggers"]
    states = {j["trigger_id"]: j["status"] for j in listed}
    ctx.check(states == {forced["trigger_id"]: "delivered", waiting["trigger_id"]: "resumed"}, "bridge triggers: the "
              "forced one delivered, the deferred one resumed", states=states)
    text = ctx.pane_text(pane)
    ctx.check(f"id={waiting['trigger_id']}" not in text and "yyy" not in text, "nothing of the deferred trigger and "
              "none of the human's keys reached the agent's pane")
    reviewer = ctx.participant(thread_id, "reviewer")
    ctx.check(reviewer["unread"] == 0 and reviewer["last_read_seq"] == seq, "inspect-thread: the reviewer read the "
              "message", reviewer=reviewer)
    trail = ctx.bridge("audit", "--db", DB, "--thread-id", thread_id, "--json").json()["events"]
    ops = {(e["operation"], e["reason"]) for e in trail}
    ctx.check(("force_trigger", "release blocker: deliver now, human agreed") in ops
              and ("trigger_queued", "OPERATOR_BUSY") in ops and ("trigger_resume", "DEFER_TIMEOUT") in ops,
              "the audit trail has the deferral, the forced trigger and the timeout", operations=sorted(ops, key=str))

