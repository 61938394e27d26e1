"""Waking dormant agents (docs/api.md), the pure part: the decision table, reason codes and the trigger envelope."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ENVELOPE_LIMIT = 8 * 1024
TERMINAL = frozenset({"delivered", "resumed", "spawned", "failed"})
ACTIVE_STATES = ("queued", "resume", "spawn", "awaiting_ack")

# Reason codes (audit, attempts, dead letters).
TARGET_NOT_FOUND = "TARGET_NOT_FOUND"
PANE_DEAD = "PANE_DEAD"
SEND_KEYS_ERROR = "SEND_KEYS_ERROR"
ACK_TIMEOUT = "ACK_TIMEOUT"
OPERATOR_BUSY = "OPERATOR_BUSY"
DEFER_TIMEOUT = "DEFER_TIMEOUT"
RUNTIME_PAUSED = "RUNTIME_PAUSED"
RESUME_FAILED = "RESUME_FAILED"
SPAWN_FAILED = "SPAWN_FAILED"
SESSION_STALE = "SESSION_STALE"
CRASH_LOOP = "CRASH_LOOP"
TRIGGER_RATE_LIMITED = "TRIGGER_RATE_LIMITED"
THREAD_AUTO_BLOCKED = "THREAD_AUTO_BLOCKED"

# Runtimes whose own session ids are UUIDs: anything else is not theirs (a resume with it would fail, or worse,
# silently start a new session), so it is never attempted.
UUID_RUNTIMES = frozenset({"claude", "codex"})
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

# Which terminal state an acknowledged job ends in, by the stage that was waiting for the acknowledgement.
ACKED_STATUS = {"tmux": "delivered", "resume": "resumed", "spawn": "spawned"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Decision:
    """What `trigger_participant` decided for a target (the first row of the table that matches)."""

    action: str  # trigger_runtime | fallback_required
    result: str  # queued | fallback_required
    job_status: str  # queued | resume | spawn
    fallback_action: str | None  # resume_session | spawn_session | None
    stale: bool


def is_stale(session: dict[str, Any] | None, now_ms: int, stale_after_s: float) -> bool:
    """No session, or no heartbeat for longer than the stale threshold."""
    return session is None or now_ms - session["last_heartbeat_at"] > stale_after_s * 1000


def decide(session: dict[str, Any] | None, now_ms: int, stale_after_s: float) -> Decision:
    """The decision table: tmux when managed and reachable, else resume when resumable, else spawn."""
    stale = is_stale(session, now_ms, stale_after_s)
    if session is not None and not stale and session["management_mode"] == "managed" \
            and session["tmux_target"] and session["status"] != "offline":
        return Decision("trigger_runtime", "queued", "queued", None, stale)
    if session is not None and not stale and session["resumable"]:
        return Decision("fallback_required", "fallback_required", "resume", "resume_session", stale)
    return Decision("fallback_required", "fallback_required", "spawn", "spawn_session", stale)


def trusted_session_id(kind: str, session_id: str | None) -> bool:
    """True when `session_id` can be the runtime's own (Claude Code and Codex ids are UUIDs)."""
    return bool(session_id) and (kind not in UUID_RUNTIMES or _UUID.match(session_id or "") is not None)


def default_prompt(thread_id: str, reason: str, since_seq: int = 0) -> str:
    """The prompt used when a trigger names none: written for a model, naming the exact tool calls to make."""
    why = {"unread_messages": "messages addressed to you are unread"}.get(reason, reason.replace("_", " "))
    return (f"Agent bridge: on thread {thread_id}, {why}. "
            f"1) Call the bridge tool read_messages with thread_id={thread_id} and since_seq={since_seq} "
            "(use since_seq=0 to see the whole thread). "
            "2) Act on what is addressed to you; reply with post_message on the same thread when a reply is due "
            "(kind event with metadata.event_type for findings, fixes and verdicts). "
            f"3) Call ack_read with thread_id={thread_id} and last_read_seq set to the latest_seq you read.")


def clean_text(text: str) -> str:
    """Collapse whitespace and drop control characters (ESC, BEL, NUL, ...): nothing may act on the terminal."""
    return " ".join(_CONTROL.sub(" ", text).split())


def envelope(trigger_id: str, thread_id: str, reason: str, prompt: str) -> str:
    """The one line typed into a pane: `[BRIDGE_TRIGGER id=… thread=… reason=…] prompt [/BRIDGE_TRIGGER]`.

    One line, so a newline in the prompt can never submit early; capped at 8 KiB (UTF-8) with the closing tag kept.
    """
    head = f"[BRIDGE_TRIGGER id={trigger_id} thread={thread_id} reason={clean_text(reason).replace(' ', '_')}]"
    tail = "[/BRIDGE_TRIGGER]"
    body = clean_text(prompt)
    budget = ENVELOPE_LIMIT - len(head.encode()) - len(tail.encode()) - 2
    encoded = body.encode("utf-8")
    if len(encoded) > budget:
        body = encoded[:budget].decode("utf-8", "ignore")
    return f"{head} {body} {tail}"


ENVELOPE_PATTERN = re.compile(r"\[BRIDGE_TRIGGER id=(?P<id>\S+) thread=(?P<thread>\S+) reason=(?P<reason>\S*)\]"
                              r"(?P<prompt>.*?)\[/BRIDGE_TRIGGER\]")


def parse_envelope(line: str) -> dict[str, str] | None:
    """The fields of an envelope found in a line (for agents and tests), or None."""
    match = ENVELOPE_PATTERN.search(line)
    if match is None:
        return None
    return {"trigger_id": match["id"], "thread_id": match["thread"], "reason": match["reason"],
            "prompt": match["prompt"].strip()}


def delivery_backoff(deliveries: int) -> float:
    """Seconds before re-delivery after the n-th unacknowledged delivery: 2 s, then 4 s, then 8 s…"""
    return 2.0 * (2 ** max(0, deliveries - 1))
