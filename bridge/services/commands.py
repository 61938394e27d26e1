"""The command table: one entry per `/v1/mcp/<command>` (and MCP tool), shared by HTTP, MCP and OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bridge.domain import models as m
from bridge.services import messages, sessions, threads, triggers
from bridge.services.core import Bridge, Call


@dataclass(frozen=True)
class Command:
    """A named use case with its input and output models."""

    name: str
    summary: str
    input: type[m.Input]
    output: type[BaseModel]
    handler: Callable[[Bridge, Call, Any], dict[str, Any]]
    writes: bool


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("create_thread", "Create a thread (coordinators).", m.CreateThreadInput, m.CreateThreadOutput,
            threads.create_thread, True),
    Command("get_thread", "Read one thread.", m.GetThreadInput, m.ThreadOut, threads.get_thread, False),
    Command("list_threads", "List visible threads, paged.", m.ListThreadsInput, m.ListThreadsOutput,
            threads.list_threads, False),
    Command("update_participants", "Add or remove participants (coordinators).", m.UpdateParticipantsInput,
            m.ThreadOut, threads.update_participants, True),
    Command("update_thread_status", "Change a thread's status (coordinators).", m.UpdateThreadStatusInput,
            m.UpdateThreadStatusOutput, threads.update_thread_status, True),
    Command("summarize_thread", "Deterministic summary with open findings.", m.SummarizeThreadInput,
            m.SummarizeThreadOutput, threads.summarize_thread, False),
    Command("post_message", "Append a chat, event or system message.", m.PostMessageInput, m.PostMessageOutput,
            messages.post_message, True),
    Command("read_messages", "Read messages after a seq, optionally long-polling.", m.ReadMessagesInput,
            m.ReadMessagesOutput, messages.read_messages, False),
    Command("ack_read", "Advance the caller's read cursor.", m.AckReadInput, m.AckReadOutput, messages.ack_read, True),
    Command("inbox", "Threads with unread messages for the caller.", m.InboxInput, m.InboxOutput, messages.inbox,
            False),
    Command("heartbeat_session", "Record the caller's session in the runtime registry.", m.HeartbeatSessionInput,
            m.HeartbeatSessionOutput, sessions.heartbeat_session, True),
    Command("trigger_participant", "Wake a participant: tmux pane, else resume, else spawn (coordinators).",
            m.TriggerParticipantInput, m.TriggerParticipantOutput, triggers.trigger_participant, True),
)}
