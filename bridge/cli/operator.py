"""Operator commands on threads (docs/api.md): inspect, escalate, owners, unblock, override-close, threads, audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bridge.cli.common import db_options, load_settings, opened, operator_call
from bridge.cli.options import ACTOR, LIMIT, REASON, reason_option
from bridge.cli.output import emit, table, trigger_table
from bridge.domain.summary import first_line
from bridge.services import operator as ops
from bridge.services import threads as thread_service
from bridge.services.core import Bridge, Call

THREAD_ID = click.option("--thread-id", required=True, help="The thread.")


def run(db: str | None, workspace: str | None, as_json: bool,
        action: Callable[[Bridge, Call], Any], render: Callable[[Any], str] | None = None,
        actor: str | None = None) -> None:
    """Open the database, run one service call as the operator, print the result."""
    settings = load_settings(db=db, workspace=workspace)
    with opened(settings, as_json) as parts:
        result = action(parts.bridge, operator_call(settings, actor))
    emit(result, as_json, render(result) if render and not as_json else None)


def _render_inspection(doc: dict[str, Any]) -> str:
    t = doc["thread"]
    esc = t["escalation"]
    escalation = (f"escalation: {esc['reason']!r} since {esc['since']}, owner {esc['owner_agent_id'] or '-'}"
                  if esc else "escalation: none")
    lines = [f"{t['thread_id']}  {t['title']!r}  ({t['type']}, {t['status']}, latest seq {t['latest_seq']})",
             escalation, f"loop guard: {doc['loop_guard']['no_progress']} messages without progress",
             "", "participants:",
             table(t["participants"], ["agent_id", "thread_role", "last_read_seq", "unread"]), "", "recent messages:"]
    lines += [f"  #{m['seq']} {m['sender_agent_id']} {m['kind']}: {first_line(m['body'], 100)}"
              for m in doc["recent_messages"]] or ["  none"]
    lines += ["", "triggers:", trigger_table(doc["triggers"]) if doc["triggers"] else "  none"]
    lines += ["", "audit:", table(doc["audit"], ["occurred_at", "actor", "operation", "outcome", "reason"])
              if doc["audit"] else "  none"]
    return "\n".join(lines)


@click.command("inspect-thread")
@THREAD_ID
@db_options
def inspect_thread(thread_id: str, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Thread, participants with cursors and unread, escalation, recent messages, triggers and audit (read-only)."""
    run(db, workspace, as_json, lambda b, c: ops.inspect_thread(b, c, thread_id), _render_inspection)


@click.command("escalate-thread")
@THREAD_ID
@REASON
@click.option("--owner-agent-id", default=None, help="Assign an owner at once.")
@ACTOR
@db_options
def escalate_thread(thread_id: str, reason: str, owner_agent_id: str | None, actor: str | None, db: str | None,
                    workspace: str | None, as_json: bool) -> None:
    """Block a thread and open an escalation record."""
    run(db, workspace, as_json, lambda b, c: ops.escalate(b, c, thread_id, reason, owner_agent_id),
        actor=actor)


def _owner_command(name: str, reassign: bool, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @THREAD_ID
    @click.option("--owner-agent-id", required=True, help="The new owner.")
    @REASON
    @ACTOR
    @db_options
    def command(thread_id: str, owner_agent_id: str, reason: str, actor: str | None, db: str | None,
                workspace: str | None, as_json: bool) -> None:
        run(db, workspace, as_json, lambda b, c: ops.set_owner(b, c, thread_id, owner_agent_id, reason,
                                                                 reassign=reassign), actor=actor)

    return command


assign_escalation_owner = _owner_command(
    "assign-escalation-owner", False, "Give a blocked thread's escalation its first owner (CONFLICT if it has one).")
reassign_escalation_owner = _owner_command(
    "reassign-escalation-owner", True, "Hand a blocked thread's escalation to another owner (CONFLICT if none).")


@click.command("get-escalation-owner")
@THREAD_ID
@db_options
def get_escalation_owner(thread_id: str, db: str | None, workspace: str | None, as_json: bool) -> None:
    """Show the escalation owner of a thread."""
    run(db, workspace, as_json, lambda b, c: ops.get_owner(b, c, thread_id))


@click.command("unblock-thread")
@THREAD_ID
@REASON
@ACTOR
@db_options
def unblock_thread(thread_id: str, reason: str, actor: str | None, db: str | None, workspace: str | None,
                   as_json: bool) -> None:
    """Unblock a blocked thread (the owner rule applies: be the owner or start the reason with human_override:).

    Any other status is refused (exit 1, nothing changed, audited)."""
    run(db, workspace, as_json, lambda b, c: ops.unblock(b, c, thread_id, reason), actor=actor)


@click.command("override-close-thread")
@THREAD_ID
@reason_option("Why; must start with human_override: (kept in the audit trail).")
@ACTOR
@db_options
def override_close_thread(thread_id: str, reason: str, actor: str | None, db: str | None, workspace: str | None,
                          as_json: bool) -> None:
    """Close a thread whatever its state or owner (reason must start with human_override:)."""
    run(db, workspace, as_json, lambda b, c: ops.override_close(b, c, thread_id, reason), actor=actor)


@click.command("threads")
@click.option("--status", type=click.Choice(["active", "blocked", "resolved", "closed"]), default=None)
@LIMIT
@db_options
def threads(status: str | None, limit: int, db: str | None, workspace: str | None, as_json: bool) -> None:
    """List threads (oldest update first)."""
    def action(bridge: Bridge, call: Call) -> Any:
        from bridge.domain.models import ListThreadsInput  # pydantic: only when the command runs

        return thread_service.list_threads(bridge, call, ListThreadsInput(status=status, limit=limit))

    def render(result: dict[str, Any]) -> str:
        rows = [{**t, "escalation_owner": (t["escalation"] or {}).get("owner_agent_id"),
                 "participants": ",".join(p["agent_id"] for p in t["participants"])} for t in result["threads"]]
        return table(rows, ["thread_id", "status", "type", "latest_seq", "escalation_owner", "participants",
                            "updated_at", "title"])

    run(db, workspace, as_json, action, render)


@click.command("audit")
@click.option("--thread-id", default=None)
@click.option("--operation", default=None)
@LIMIT
@db_options
def audit(thread_id: str | None, operation: str | None, limit: int, db: str | None, workspace: str | None,
          as_json: bool) -> None:
    """The newest audit events (append-only trail)."""
    run(db, workspace, as_json,
        lambda b, c: {"events": ops.audit_trail(b, thread_id=thread_id, operation=operation, limit=limit)},
        lambda r: table(r["events"], ["audit_id", "occurred_at", "actor", "actor_role", "operation", "outcome",
                                      "thread_id", "reason"]))


COMMANDS = (inspect_thread, escalate_thread, assign_escalation_owner, reassign_escalation_owner,
            get_escalation_owner, unblock_thread, override_close_thread, threads, audit)
