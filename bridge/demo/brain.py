"""A scripted model: turns a bridge trigger into `read_messages` → `post_message`… → `ack_read`, then a short reply.

Pure and stateless: every model request replays the conversation so far (the wire formats of both fake APIs are
converted to `Step`s first), and the brain decides the next step from it alone. What an agent posts is derived from
the thread's state as read, so waking it twice for the same state posts nothing twice.

Personas:
- `reviewer`: reports the scripted findings (to `peer`) on its first wake; answers each `fix_pushed` with
  `finding_verified`, or `finding_rejected` the first time for findings listed in `reject_first`; with `repeat`,
  it reports the same finding again instead of verifying (the loop the guard must stop).
- `executioner`: answers each finding reported or rejected since its last fix of it with `fix_pushed`.
- `echo`: replies to any message from someone else with one chat message (latency runs).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

THREAD_ID = re.compile(r"\bthr_[0-9a-zA-Z]+")


@dataclass(frozen=True)
class Step:
    """One item of a conversation: a user text, a tool call made by the model, or a tool's result text."""

    kind: Literal["user", "call", "result"]
    text: str = ""
    name: str = ""  # bare tool name for calls (`read_messages`, not `mcp__bridge__read_messages`)
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    finding_id: str
    title: str
    severity: str = "high"
    file: str = "src/app.py"
    line: int = 1


@dataclass(frozen=True)
class Persona:
    agent_id: str
    role: Literal["reviewer", "executioner", "echo"]
    peer: str | None = None
    findings: tuple[Finding, ...] = ()
    reject_first: frozenset[str] = frozenset()
    repeat: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Persona:
        return cls(agent_id=data["agent_id"], role=data["role"], peer=data.get("peer"),
                   findings=tuple(Finding(**f) for f in data.get("findings", [])),
                   reject_first=frozenset(data.get("reject_first", [])), repeat=bool(data.get("repeat", False)))

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "role": self.role, "peer": self.peer,
                "findings": [f.__dict__ for f in self.findings], "reject_first": sorted(self.reject_first),
                "repeat": self.repeat}


@dataclass(frozen=True)
class Reply:
    """The brain's next move: a tool call, or final text (the turn ends)."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a tool result's text (clients may wrap or prefix it)."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return None


def decide(persona: Persona, steps: list[Step]) -> Reply:
    """The next move after the latest user text that names a bridge thread."""
    start = next((i for i in range(len(steps) - 1, -1, -1)
                  if steps[i].kind == "user" and THREAD_ID.search(steps[i].text)), None)
    if start is None:
        return Reply(text="Ready. I act on bridge triggers.")
    thread_id = THREAD_ID.search(steps[start].text).group(0)  # type: ignore[union-attr]
    turn = steps[start + 1:]
    calls = [s for s in turn if s.kind == "call"]
    results = [s for s in turn if s.kind == "result"]
    read_index = next((i for i, c in enumerate(calls) if c.name == "read_messages"), None)
    if read_index is None:
        return Reply(tool="read_messages", arguments={"thread_id": thread_id, "since_seq": 0, "limit": 200})
    page = parse_json_object(results[read_index].text) if read_index < len(results) else None
    if page is None or not isinstance(page.get("messages"), list):
        return Reply(text=f"Could not read thread {thread_id}.")
    posts = plan(persona, page["messages"])
    done = [c for c in calls[read_index + 1:] if c.name == "post_message"]
    if len(done) < len(posts):
        return Reply(tool="post_message", arguments={"thread_id": thread_id, **posts[len(done)]})
    if not any(c.name == "ack_read" for c in calls):
        return Reply(tool="ack_read", arguments={"thread_id": thread_id,
                                                 "last_read_seq": int(page.get("latest_seq") or 0)})
    return Reply(text=f"Handled bridge thread {thread_id}: {len(posts)} message(s) posted, read acknowledged.")


def _event(event_type: str, body: str, to: str | None, finding_id: str, **extra: Any) -> dict[str, Any]:
    post: dict[str, Any] = {"schema_version": 1, "kind": "event", "body": body,
                            "metadata": {"event_type": event_type, "finding_id": finding_id, **extra}}
    if to:
        post["to"] = [to]
    return post


def _events(messages: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str | None]]:
    """(message, event_type, finding_id) for event messages."""
    out = []
    for m in messages:
        meta = m.get("metadata") or {}
        if m.get("kind") == "event" and isinstance(meta.get("event_type"), str):
            fid = meta.get("finding_id")
            out.append((m, meta["event_type"], None if fid is None else str(fid)))
    return out


def plan(persona: Persona, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What this persona posts after reading the whole thread (nothing when it already answered everything)."""
    me = persona.agent_id
    events = _events(messages)
    if persona.role == "echo":
        theirs = [m for m in messages if m.get("sender_agent_id") != me]
        mine = [m for m in messages if m.get("sender_agent_id") == me]
        if theirs and (not mine or mine[-1]["seq"] < theirs[-1]["seq"]):
            last = theirs[-1]
            return [{"schema_version": 1, "kind": "chat", "body": f"echo seq {last['seq']}",
                     "in_reply_to": last["message_id"], "to": [last["sender_agent_id"]]}]
        return []
    posts: list[dict[str, Any]] = []
    if persona.role == "reviewer":
        if not any(m.get("sender_agent_id") == me and et == "finding_reported" for m, et, _ in events):
            for f in persona.findings:
                posts.append(_event("finding_reported", f.title, persona.peer, f.finding_id, severity=f.severity,
                                    file=f.file, line=f.line))
            return posts
        findings = {f.finding_id: f for f in persona.findings}
        for fid in _fixes_awaiting_verdict(events, me):
            rejected_before = any(m.get("sender_agent_id") == me and et == "finding_rejected" and f == fid
                                  for m, et, f in events)
            if persona.repeat and fid in findings:
                f = findings[fid]
                posts.append(_event("finding_reported", f.title, persona.peer, fid, severity=f.severity,
                                    file=f.file, line=f.line))
            elif fid in persona.reject_first and not rejected_before:
                posts.append(_event("finding_rejected", f"Fix for {fid} does not cover the failing case.",
                                    persona.peer, fid))
            else:
                posts.append(_event("finding_verified", f"Verified the fix for {fid}.", persona.peer, fid))
        return posts
    # executioner: one fix per finding reported or rejected since its latest fix
    last_fix: dict[str, int] = {}
    asks: dict[str, dict[str, Any]] = {}
    for m, et, fid in events:
        if fid is None:
            continue
        if et == "fix_pushed" and m.get("sender_agent_id") == me:
            last_fix[fid] = m["seq"]
        elif et in ("finding_reported", "finding_rejected") and m.get("sender_agent_id") != me:
            asks[fid] = m
    for fid, ask in asks.items():
        if ask["seq"] > last_fix.get(fid, 0):
            commit = hashlib.sha1(f"{fid}:{ask['seq']}".encode()).hexdigest()[:10]
            posts.append(_event("fix_pushed", f"Fixed {fid} in commit {commit}.", ask.get("sender_agent_id"), fid,
                                commit=commit))
    return posts


def _fixes_awaiting_verdict(events: list[tuple[dict[str, Any], str, str | None]], me: str) -> list[str]:
    """Finding ids whose latest fix_pushed came after this reviewer's latest verdict on them."""
    latest_fix: dict[str, int] = {}
    latest_verdict: dict[str, int] = {}
    for m, et, fid in events:
        if fid is None:
            continue
        if et == "fix_pushed" and m.get("sender_agent_id") != me:
            latest_fix[fid] = m["seq"]
        elif m.get("sender_agent_id") == me and et in ("finding_verified", "finding_rejected", "finding_reported"):
            latest_verdict[fid] = m["seq"]
    return [fid for fid, seq in latest_fix.items() if seq > latest_verdict.get(fid, 0)]
