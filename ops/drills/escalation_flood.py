"""Drill for runbooks/escalation-flood.md: agents talking in circles on several threads; the loop guard blocks them all;
the operator triages with the CLI."""

from __future__ import annotations

from bridge_ops.drills.context import DB, DrillContext
from bridge_ops.drills.framework import drill

SETTINGS = {"BRIDGE_LOOP_GUARD_TURNS": "6", "BRIDGE_LOOP_GUARD_REPEATS": "3", "BRIDGE_WRITE_QUOTA_PER_MIN": "0"}
LOOPING = 3  # threads blocked for no progress; one more is blocked for a repeated finding


def chat_until_blocked(ctx: DrillContext, tokens: list[str], thread_id: str) -> int:
    """Ping-pong chat without progress until the loop guard blocks the thread; return the messages it took."""
    for turn in range(1, 30):
        out = ctx.post(tokens[turn % 2], thread_id, f"are you sure? (turn {turn})")
        if out["thread_status"] == "blocked":
            return turn
    raise AssertionError("the loop guard never tripped")


@drill("escalation-flood", "Escalation flood: the loop guard blocks many threads",
       injects="chat ping-pong without progress on 3 threads and a finding reported 3 times on a 4th (loop guard "
               "at 6)",
       verifies="bridge_threads{blocked}, bridge_escalations_total{loop_guard}, bridge_loop_guard_trips_total by "
                "kind; threads/inspect-thread list and explain them; unblock-thread, assign/get-escalation-owner + "
                "owner unblock, override-close-thread; gauges back to 0 blocked; closed threads refuse posts; all "
                "audited")
def run(ctx: DrillContext) -> None:
    ctx.step("Set-up: a bridge whose loop guard trips after 6 messages without progress (default 20)")
    ctx.serve(env=SETTINGS)
    coord = ctx.token("coordinator", "coordinator")
    agents = [ctx.token("reviewer"), ctx.token("executioner")]
    threads = [ctx.new_thread(coord, f"looping {i}") for i in range(LOOPING + 1)]

    ctx.fault(f"agents argue in circles on {LOOPING} threads and re-report one finding on a fourth")
    turns = [chat_until_blocked(ctx, agents, t) for t in threads[:LOOPING]]
    ctx.observe("messages until the loop guard blocked each thread", turns=turns)
    finding = {"event_type": "finding_reported", "finding_id": "F-1", "severity": "high"}
    statuses = [ctx.post(agents[0], threads[LOOPING], "Null check missing in parse()", kind="event",
                         metadata=finding)["thread_status"] for _ in range(3)]
    ctx.check(statuses == ["active", "active", "blocked"], "the third report of finding F-1 blocks the fourth thread",
              statuses=statuses)

    ctx.step("1. Detect: escalation and loop-guard counters, blocked threads gauge")
    text = ctx.metrics()
    ctx.check_metric("bridge_threads", LOOPING + 1, text=text, status="blocked")
    ctx.check_metric("bridge_escalations_total", LOOPING + 1, text=text, reason="loop_guard")
    no_progress = ctx.metric("bridge_loop_guard_trips_total", text=text, kind="no_progress")
    repeated = ctx.metric("bridge_loop_guard_trips_total", text=text, kind="repeated_finding")
    ctx.check((no_progress, repeated) == (LOOPING, 1), "bridge_loop_guard_trips_total: no_progress 3, "
              "repeated_finding 1", no_progress=no_progress, repeated_finding=repeated)

    ctx.step("2. Diagnose: list the blocked threads, inspect one")
    listed = ctx.bridge("threads", "--db", DB, "--status", "blocked", "--json").json()["threads"]
    reasons = {t["thread_id"]: t["escalation"]["reason"] for t in listed}
    ctx.check(set(reasons) == set(threads), "bridge threads --status blocked lists the four", reasons=reasons)
    ctx.check(all(reasons[t].startswith("loop_guard:no_progress:") for t in threads[:LOOPING])
              and reasons[threads[LOOPING]] == "loop_guard:repeated_finding:F-1", "each escalation names its loop",
              reasons=reasons)
    inspected = ctx.bridge("inspect-thread", "--db", DB, "--thread-id", threads[0], "--json").json()
    ctx.check(inspected["thread"]["escalation"]["reason"].startswith("loop_guard:")
              and len(inspected["recent_messages"]) >= turns[0], "inspect-thread shows the escalation and the "
              "messages that went round", escalation=inspected["thread"]["escalation"])

    ctx.step("3. Triage: unblock one, hand one to an owner, close two")
    ctx.bridge("unblock-thread", "--db", DB, "--thread-id", threads[0], "--reason",
               "human_override: agents redirected, loop broken")
    ctx.bridge("assign-escalation-owner", "--db", DB, "--thread-id", threads[1], "--owner-agent-id", "tech-lead",
               "--reason", "tech lead to settle the disagreement")
    ctx.bridge("reassign-escalation-owner", "--db", DB, "--thread-id", threads[1], "--owner-agent-id", "coordinator",
               "--reason", "tech lead is away: the coordinator settles it")
    owner = ctx.bridge("get-escalation-owner", "--db", DB, "--thread-id", threads[1], "--json").json()
    ctx.check(owner["owner_agent_id"] == "coordinator", "get-escalation-owner: coordinator", owner=owner)
    settled = ctx.ok("update_thread_status", coord, thread_id=threads[1], status="active",
                     reason="disagreement settled: reviewer's finding stands")
    ctx.check(settled["status"] == "active", "the owner (coordinator) unblocks its thread through the API")
    for thread_id in threads[2:]:
        ctx.bridge("override-close-thread", "--db", DB, "--thread-id", thread_id, "--reason",
                   "human_override: runaway loop, work moved to a new thread")

    ctx.step("4. Verify")
    text = ctx.metrics()
    gauge = {s: ctx.metric("bridge_threads", text=text, status=s) for s in ("active", "blocked", "closed")}
    ctx.check(gauge == {"active": 2, "blocked": 0, "closed": 2}, "bridge_threads: 2 active, 0 blocked, 2 closed",
              gauge=gauge)
    after = ctx.post(agents[0], threads[0], "back on track")
    ctx.check(after["thread_status"] == "active", "an unblocked thread takes messages and is not re-blocked at once "
              "(the status change reset the loop counter)", post=after)
    closed = ctx.api("post_message", agents[0], thread_id=threads[2], schema_version=1, kind="chat", body="more?")
    ctx.check(closed.status == 409 and closed.code == "THREAD_CLOSED", "a closed thread refuses messages",
              status=closed.status, code=closed.code)
    trail = ctx.bridge("audit", "--db", DB, "--json", "--limit", "200").json()["events"]
    done = {(e["operation"], e["thread_id"]) for e in trail if e["actor"].startswith("human:")
            and e["outcome"] == "ok"}
    ctx.check({("unblock_thread", threads[0]), ("assign_escalation_owner", threads[1]),
               ("reassign_escalation_owner", threads[1]),
               ("override_close_thread", threads[2]), ("override_close_thread", threads[3])} <= done,
              "every operator action is in the audit trail", operator_actions=sorted(done))

