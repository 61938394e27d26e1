"""Deterministic thread summaries: no model call, good enough to brief a freshly spawned session."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.domain.identifiers import iso
from bridge.domain.vocabulary import CLOSING_EVENTS, EventType

OPEN_ITEM_EVENTS: tuple[EventType, ...] = (EventType.FINDING_REPORTED, *sorted(CLOSING_EVENTS))
"""The events that open or close an open item: all `OpenItems` needs to see of a thread."""


def first_line(text: str, limit: int = 160) -> str:
    """The first non-empty line of a text, cut to `limit` characters."""
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _finding_id(message: dict[str, Any]) -> str | None:
    value = message["metadata"].get("finding_id")
    return None if value is None or isinstance(value, dict | list) else str(value)


class OpenItems:
    """The open findings of a thread, computed incrementally from its events in ascending seq order.

    A finding is closed by a later closing event that replies to it (`in_reply_to`) or carries its `finding_id`.
    Both point backwards in time (a reply names an existing message; an id closes only earlier findings), so a
    closing event settles the findings seen so far and nothing but the still-open findings is kept: a thread of
    any length can be fed page by page. The store keeps the same rule as messages arrive (the insert trigger of
    migration 7, table open_findings); this is the reference it is tested against."""

    def __init__(self) -> None:
        self._open: dict[str, dict[str, Any]] = {}  # message id -> item, in seq order
        self._by_finding_id: dict[str, list[str]] = {}  # finding id -> message ids of its open findings

    def add(self, event: dict[str, Any]) -> None:
        """Take the next event (decoded metadata; seq greater than every event fed before)."""
        if event["event_type"] == EventType.FINDING_REPORTED:
            item = finding_item(event)
            self._open[item["message_id"]] = item
            if item["finding_id"] is not None:
                self._by_finding_id.setdefault(item["finding_id"], []).append(item["message_id"])
        elif event["event_type"] in CLOSING_EVENTS:
            if event["in_reply_to"]:
                self._open.pop(event["in_reply_to"], None)
            finding_id = _finding_id(event)
            for message_id in self._by_finding_id.pop(finding_id, []) if finding_id is not None else []:
                self._open.pop(message_id, None)

    def items(self) -> list[dict[str, Any]]:
        """The findings still open, oldest first."""
        return list(self._open.values())


def finding_item(m: dict[str, Any]) -> dict[str, Any]:
    """The open item of a `finding_reported` message (decoded metadata)."""
    meta = m["metadata"]
    line = meta.get("line")
    return {
        "message_id": m["message_id"], "seq": m["seq"], "sender_agent_id": m["sender_agent_id"],
        "finding_id": _finding_id(m),
        "severity": meta.get("severity") if isinstance(meta.get("severity"), str) else None,
        "file": meta.get("file") if isinstance(meta.get("file"), str) else None,
        "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
        "title": first_line(m["body"]),
    }


def open_items(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings reported and not later closed by a verifying/resolving event that points to them."""
    accumulator = OpenItems()
    for event in events:
        accumulator.add(event)
    return accumulator.items()


def summarize(thread: dict[str, Any], participants: list[dict[str, Any]], counts: dict[str, Any],
              items: list[dict[str, Any]], latest_fix: dict[str, Any] | None, recent: list[dict[str, Any]],
              escalation: dict[str, Any] | None) -> dict[str, Any]:
    """Build the summary document of a thread from already-loaded rows and its open items."""
    by_sender = counts["by_sender"]
    people = [{
        "agent_id": p["agent_id"], "thread_role": p["thread_role"],
        "last_activity_at": iso(by_sender[p["agent_id"]]["last_at"]) if p["agent_id"] in by_sender else None,
        "messages": by_sender[p["agent_id"]]["n"] if p["agent_id"] in by_sender else 0,
    } for p in participants]
    total = sum(counts["by_kind"].values())
    lines = [
        f"Thread {thread['thread_id']}: \"{thread['title']}\" ({thread['type']}), status {thread['status']},"
        f" {total} messages (latest seq {thread['latest_seq']}).",
        "Participants: " + ", ".join(
            f"{p['agent_id']} ({p['thread_role']}, {p['messages']} msgs, last {p['last_activity_at'] or 'never'})"
            for p in people) + ".",
        "Messages by kind: " + (", ".join(f"{k}={v}" for k, v in sorted(counts["by_kind"].items())) or "none")
        + "; events: " + (", ".join(f"{k}={v}" for k, v in counts["by_event_type"].items()) or "none") + ".",
    ]
    if latest_fix is not None:
        fix = latest_fix
        commit = fix["metadata"].get("commit")
        lines.append(f"Latest fix_pushed: seq {fix['seq']} by {fix['sender_agent_id']}"
                     + (f", commit {commit}" if isinstance(commit, str) else "") + f": {first_line(fix['body'])}")
    if escalation is not None:
        lines.append(f"Escalated since {iso(escalation['opened_at'])} by {escalation['escalated_by']}:"
                     f" {escalation['reason']}; owner {escalation['owner_agent_id'] or 'unassigned'}.")
    else:
        lines.append("No open escalation.")
    lines.append(f"Open findings: {len(items)}." + "".join(
        f"\n  - [{i['severity'] or 'unrated'}] {i['title']} (seq {i['seq']}, {i['sender_agent_id']}"
        + (f", {i['file']}" + (f":{i['line']}" if i["line"] is not None else "") if i["file"] else "") + ")"
        for i in items))
    if recent:
        lines.append("Recent messages:" + "".join(
            f"\n  #{m['seq']} {m['sender_agent_id']} {m['kind']}"
            + (f"/{m['event_type']}" if m["event_type"] else "") + f": {first_line(m['body'], 120)}"
            for m in recent[-10:]))
    return {
        "summary": "\n".join(lines),
        "open_items": items,
        "last_status": thread["status"],
        "participants": people,
        "counts": {"total": total, "by_kind": counts["by_kind"], "by_event_type": counts["by_event_type"],
                   "open_items": len(items)},
    }
