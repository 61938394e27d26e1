"""Deterministic thread summaries (SPEC §6): no model call, good enough to brief a freshly spawned session."""

from __future__ import annotations

from typing import Any

from bridge.domain.identifiers import iso

CLOSING_EVENTS = frozenset({"finding_verified", "finding_resolved", "resolved"})


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


def open_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings reported and not later closed by a verifying/resolving event that points to them."""
    findings = [m for m in events if m["event_type"] == "finding_reported"]
    closed_ids: set[str] = set()
    closed_finding_ids: dict[str, int] = {}  # finding id -> seq of its latest closing event
    for m in events:
        if m["event_type"] in CLOSING_EVENTS:
            if m["in_reply_to"]:
                closed_ids.add(m["in_reply_to"])
            finding_id = _finding_id(m)
            if finding_id is not None:
                closed_finding_ids[finding_id] = max(m["seq"], closed_finding_ids.get(finding_id, 0))
    items = []
    for m in findings:
        finding_id = _finding_id(m)
        closed_later = finding_id is not None and closed_finding_ids.get(finding_id, 0) > m["seq"]
        if m["message_id"] in closed_ids or closed_later:
            continue
        meta = m["metadata"]
        line = meta.get("line")
        items.append({
            "message_id": m["message_id"], "seq": m["seq"], "sender_agent_id": m["sender_agent_id"],
            "finding_id": finding_id,
            "severity": meta.get("severity") if isinstance(meta.get("severity"), str) else None,
            "file": meta.get("file") if isinstance(meta.get("file"), str) else None,
            "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
            "title": first_line(m["body"]),
        })
    return items


def summarize(thread: dict[str, Any], participants: list[dict[str, Any]], counts: dict[str, Any],
              events: list[dict[str, Any]], recent: list[dict[str, Any]],
              escalation: dict[str, Any] | None) -> dict[str, Any]:
    """Build the summary document of a thread from already-loaded rows."""
    by_sender = counts["by_sender"]
    people = [{
        "agent_id": p["agent_id"], "thread_role": p["thread_role"],
        "last_activity_at": iso(by_sender[p["agent_id"]]["last_at"]) if p["agent_id"] in by_sender else None,
        "messages": by_sender[p["agent_id"]]["n"] if p["agent_id"] in by_sender else 0,
    } for p in participants]
    items = open_items(events)
    fixes = [m for m in events if m["event_type"] == "fix_pushed"]
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
    if fixes:
        fix = fixes[-1]
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
