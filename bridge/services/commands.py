"""The command table: one entry per `/v1/mcp/<command>` (and MCP tool), shared by HTTP, MCP and OpenAPI."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from bridge.domain import models as m
from bridge.domain.authz import check_identity_hints
from bridge.services import messages, sessions, threads, triggers
from bridge.services.core import Bridge, Call


@dataclass(frozen=True)
class Command:
    """A named use case with its input and output models, and how it reads to a model (MCP) or a person (OpenAPI).

    `summary` is one line; `description` says when to use the command and what comes back; `writes` and
    `idempotent` become the MCP annotations (`readOnlyHint`, `idempotentHint`; nothing here destroys data)."""

    name: str
    title: str
    summary: str
    description: str
    input: type[m.Input]
    output: type[BaseModel]
    handler: Callable[[Bridge, Call, Any], dict[str, Any]]  # runs after the identity-hint check
    writes: bool
    idempotent: bool = True


Handler = Callable[[Bridge, Call, Any], dict[str, Any]]


def checking_identity_hints(handler: Handler) -> Handler:
    """`handler` preceded by the identity-hint rule: every hint in the payload (`m.Claim` fields) must equal the
    caller's claims, checked here once for every command rather than in each service."""
    @functools.wraps(handler)
    def run(bridge: Bridge, call: Call, req: m.Input) -> dict[str, Any]:
        check_identity_hints(call.principal, req.identity_hints())
        return handler(bridge, call, req)

    return run


COMMANDS: dict[str, Command] = {c.name: replace(c, handler=checking_identity_hints(c.handler)) for c in (
    Command("create_thread", "Create thread", "Create a thread (coordinators).",
            "Open a shared thread for a piece of work and name its participants. Coordinators only. Returns the "
            "thread_id to use in every other call. With the same idempotency_key a retry returns the same thread.",
            m.CreateThreadInput, m.CreateThreadOutput, threads.create_thread, True, idempotent=False),
    Command("get_thread", "Get thread", "Read one thread.",
            "Read one thread: title, type, status (active, blocked, resolved, closed), participants, latest_seq "
            "and any open escalation.", m.GetThreadInput, m.ThreadOut, threads.get_thread, False),
    Command("list_threads", "List threads", "List visible threads, paged.",
            "List the threads you can see, newest activity first, filtered by status, type or participant. Pass "
            "the returned next_cursor to get the next page.", m.ListThreadsInput, m.ListThreadsOutput,
            threads.list_threads, False),
    Command("update_participants", "Update participants", "Add or remove participants (coordinators).",
            "Add or remove thread participants (coordinators). Returns the thread as it is afterwards.",
            m.UpdateParticipantsInput, m.ThreadOut, threads.update_participants, True),
    Command("update_thread_status", "Change thread status", "Change a thread's status (coordinators).",
            "Move a thread between active, blocked (escalated), resolved and closed, with a reason. Unblocking or "
            "closing a blocked thread needs its escalation owner or an override reason. Returns the change made.",
            m.UpdateThreadStatusInput, m.UpdateThreadStatusOutput, threads.update_thread_status, True),
    Command("summarize_thread", "Summarize thread", "Deterministic summary with open findings.",
            "A short summary of a thread: participants, counts, latest fix, escalation, open findings (reported "
            "and not verified) and the recent messages. Use it to catch up on a long thread before reading it.",
            m.SummarizeThreadInput, m.SummarizeThreadOutput, threads.summarize_thread, False),
    Command("post_message", "Post message", "Append a chat, event or system message.",
            "Post to a thread you take part in. Use kind 'event' with metadata.event_type for work items "
            "(finding_reported with severity/file/line, fix_pushed with commit, finding_verified, "
            "finding_rejected, re_review_requested) and 'chat' for everything else. Address it with `to` or "
            "`to_role` to wake those agents. Returns the message's seq. Retry with the same idempotency_key.",
            m.PostMessageInput, m.PostMessageOutput, messages.post_message, True, idempotent=False),
    Command("read_messages", "Read messages", "Read messages after a seq, optionally long-polling.",
            "Read a thread's messages after since_seq (your last read seq; 0 for all), oldest first, up to limit. "
            "Returns messages, next_seq (pass it as since_seq to continue), has_more and latest_seq. With wait_ms "
            "it waits for new messages instead of returning empty: prefer it to polling. Reading does not mark "
            "anything read: call ack_read.", m.ReadMessagesInput, m.ReadMessagesOutput, messages.read_messages,
            False),
    Command("ack_read", "Acknowledge read", "Advance the caller's read cursor.",
            "Mark a thread read up to last_read_seq (the latest seq you handled). This is how the bridge knows you "
            "acted on a wake-up; the cursor never moves back.", m.AckReadInput, m.AckReadOutput, messages.ack_read,
            True),
    Command("inbox", "Inbox", "Threads with unread messages for the caller.",
            "The threads with messages you have not acknowledged, with unread counts and your cursor: start here. "
            "With wait_ms it waits until something arrives.", m.InboxInput, m.InboxOutput, messages.inbox, False),
    Command("heartbeat_session", "Heartbeat session", "Record the caller's session in the runtime registry.",
            "Tell the bridge your session is alive (and how to reach it: tmux pane, resumable, cwd), so it wakes "
            "you the right way. session_id must be your token's session.", m.HeartbeatSessionInput,
            m.HeartbeatSessionOutput, sessions.heartbeat_session, True),
    Command("trigger_participant", "Wake participant",
            "Wake a participant: tmux pane, else resume, else spawn (coordinators).",
            "Wake another participant now (coordinators): typed into its terminal, else its session resumed, else "
            "a fresh session spawned with the thread summary. Returns the trigger job and the path chosen.",
            m.TriggerParticipantInput, m.TriggerParticipantOutput, triggers.trigger_participant, True,
            idempotent=False),
)}
