"""The scripted brain the fake models play: what each persona posts for a thread's state, and the turn's steps."""

from __future__ import annotations

import json
from typing import Any

from bridge.demo.brain import Finding, Persona, Step, decide, parse_json_object, plan

REVIEWER = Persona(agent_id="rev", role="reviewer", peer="exe",
                   findings=(Finding("F1", "null check"), Finding("F2", "off by one")), reject_first=frozenset({"F2"}))
EXECUTIONER = Persona(agent_id="exe", role="executioner")


def msg(seq: int, sender: str, event_type: str | None = None, finding: str | None = None,
        kind: str = "event") -> dict[str, Any]:
    meta = {} if event_type is None else {"event_type": event_type, **({"finding_id": finding} if finding else {})}
    return {"message_id": f"m{seq}", "seq": seq, "sender_agent_id": sender, "kind": kind if event_type else "chat",
            "metadata": meta, "body": "x"}


def kinds(posts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(p["metadata"]["event_type"], p["metadata"]["finding_id"]) for p in posts]


def test_reviewer_reports_its_findings_once_to_its_peer():
    posts = plan(REVIEWER, [msg(1, "coord")])
    assert kinds(posts) == [("finding_reported", "F1"), ("finding_reported", "F2")]
    assert all(p["to"] == ["exe"] and p["metadata"]["severity"] == "high" for p in posts)
    reported = [msg(1, "coord"), msg(2, "rev", "finding_reported", "F1"), msg(3, "rev", "finding_reported", "F2")]
    assert plan(REVIEWER, reported) == []  # woken again with nothing new: nothing twice


def test_reviewer_verifies_one_fix_rejects_the_other_first_then_verifies_the_second_fix():
    history = [msg(1, "coord"), msg(2, "rev", "finding_reported", "F1"), msg(3, "rev", "finding_reported", "F2"),
               msg(4, "exe", "fix_pushed", "F1"), msg(5, "exe", "fix_pushed", "F2")]
    assert kinds(plan(REVIEWER, history)) == [("finding_verified", "F1"), ("finding_rejected", "F2")]
    history += [msg(6, "rev", "finding_verified", "F1"), msg(7, "rev", "finding_rejected", "F2"),
                msg(8, "exe", "fix_pushed", "F2")]
    assert kinds(plan(REVIEWER, history)) == [("finding_verified", "F2")]


def test_executioner_fixes_each_finding_reported_or_rejected_since_its_last_fix():
    history = [msg(2, "rev", "finding_reported", "F1"), msg(3, "rev", "finding_reported", "F2")]
    assert kinds(plan(EXECUTIONER, history)) == [("fix_pushed", "F1"), ("fix_pushed", "F2")]
    history += [msg(4, "exe", "fix_pushed", "F1"), msg(5, "exe", "fix_pushed", "F2"),
                msg(6, "rev", "finding_verified", "F1"), msg(7, "rev", "finding_rejected", "F2")]
    fixes = plan(EXECUTIONER, history)
    assert kinds(fixes) == [("fix_pushed", "F2")]
    assert fixes[0]["to"] == ["rev"] and fixes[0]["metadata"]["commit"]


def test_a_repeating_reviewer_reports_the_same_finding_after_every_fix():
    looping = Persona(agent_id="rev", role="reviewer", peer="exe", findings=(Finding("F1", "null check"),),
                      repeat=True)
    history = [msg(2, "rev", "finding_reported", "F1"), msg(3, "exe", "fix_pushed", "F1")]
    assert kinds(plan(looping, history)) == [("finding_reported", "F1")]


def test_a_turn_reads_then_posts_then_acks_then_answers():
    trigger = Step("user", "[BRIDGE_TRIGGER id=trg_1 thread=thr_abc reason=unread_messages] read it")
    steps = [trigger]
    first = decide(EXECUTIONER, steps)
    assert (first.tool, first.arguments["thread_id"]) == ("read_messages", "thr_abc")
    page = {"messages": [msg(1, "rev", "finding_reported", "F1")], "latest_seq": 1}
    steps += [Step("call", name="read_messages", arguments=first.arguments),
              Step("result", "tool output: " + json.dumps(page))]
    post = decide(EXECUTIONER, steps)
    assert post.tool == "post_message" and post.arguments["metadata"]["event_type"] == "fix_pushed"
    steps += [Step("call", name="post_message", arguments=post.arguments), Step("result", "{}")]
    ack = decide(EXECUTIONER, steps)
    assert (ack.tool, ack.arguments) == ("ack_read", {"thread_id": "thr_abc", "last_read_seq": 1})
    steps += [Step("call", name="ack_read", arguments=ack.arguments), Step("result", "{}")]
    final = decide(EXECUTIONER, steps)
    assert final.tool is None and "thr_abc" in final.text


def test_no_thread_in_the_prompt_means_no_tool_call():
    assert decide(REVIEWER, [Step("user", "hello")]).tool is None


def test_persona_round_trips_through_json():
    assert Persona.from_json(json.loads(json.dumps(REVIEWER.to_json()))) == REVIEWER


def test_parse_json_object_finds_the_object_inside_wrapped_text():
    assert parse_json_object('result: {"a": {"b": 1}} trailing') == {"a": {"b": 1}}
    assert parse_json_object("no json {here") is None
