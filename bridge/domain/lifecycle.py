"""The thread state machine (docs/api.md): the one place that says which status change is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.domain.vocabulary import EventType, Reason
from bridge.errors import Forbidden, InvalidThreadTransition

Status = Literal["active", "blocked", "resolved", "closed"]
STATUSES: tuple[Status, ...] = ("active", "blocked", "resolved", "closed")
OVERRIDE_PREFIXES = ("human_override:", "coordinator_override:")

# (from, to) -> operation name; pairs not listed (and not same-status) are refused.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("active", "blocked"): "escalate",
    ("active", "resolved"): "resolve",
    ("active", "closed"): "close",
    ("blocked", "active"): "unblock",
    ("blocked", "closed"): "close",
    ("resolved", "active"): "reopen",
    ("resolved", "closed"): "close",
}
EVENT_TYPES: dict[str, EventType] = {
    "escalate": EventType.THREAD_ESCALATED, "resolve": EventType.THREAD_RESOLVED, "close": EventType.THREAD_CLOSED,
    "unblock": EventType.THREAD_UNBLOCKED, "reopen": EventType.THREAD_REOPENED,
}


@dataclass(frozen=True)
class TransitionPlan:
    """What a permitted status change does."""

    from_status: str
    to_status: str
    operation: str  # escalate | resolve | close | unblock | reopen | noop

    @property
    def changed(self) -> bool:
        return self.from_status != self.to_status

    @property
    def event_type(self) -> EventType:
        """The event type of the system message announcing this change."""
        return EVENT_TYPES.get(self.operation, EventType.THREAD_STATUS_UNCHANGED)

    @property
    def opens_escalation(self) -> bool:
        return self.to_status == "blocked" and self.changed

    @property
    def closes_escalation(self) -> bool:
        return self.from_status == "blocked" and self.changed


def is_override(reason: str) -> bool:
    """True when a reason carries a human or coordinator override prefix."""
    return reason.startswith(OVERRIDE_PREFIXES)


def plan_transition(current: str, target: str, *, actor_agent_id: str, reason: str,
                    owner_agent_id: str | None) -> TransitionPlan:
    """Check a status change against the table and the owner rule; raise if refused."""
    if current == target:
        return TransitionPlan(current, target, "noop")
    operation = TRANSITIONS.get((current, target))
    if operation is None:
        raise InvalidThreadTransition(
            f"cannot change a {current} thread to {target}",
            {"from_status": current, "to_status": target, "allowed": allowed_targets(current)},
        )
    if current == "blocked":
        _check_owner_rule(target, actor_agent_id=actor_agent_id, reason=reason, owner_agent_id=owner_agent_id)
    return TransitionPlan(current, target, operation)


def _check_owner_rule(target: str, *, actor_agent_id: str, reason: str, owner_agent_id: str | None) -> None:
    if is_override(reason):
        return
    if owner_agent_id is not None:
        if actor_agent_id != owner_agent_id:
            verb = "close" if target == "closed" else "unblock"
            raise Forbidden(
                f"only the escalation owner {owner_agent_id} or an override may {verb} this thread",
                {"reason": Reason.OWNER_RULE, "owner_agent_id": owner_agent_id,
                 "override_prefixes": list(OVERRIDE_PREFIXES)},
            )
        return
    if target == "closed":
        raise Forbidden(
            "closing a blocked thread without an owner needs a human_override: or coordinator_override: reason",
            {"reason": Reason.OVERRIDE_REQUIRED, "override_prefixes": list(OVERRIDE_PREFIXES)},
        )


def allowed_targets(current: str) -> list[str]:
    """Statuses reachable from `current` (excluding the no-op)."""
    return [to for (frm, to) in TRANSITIONS if frm == current]
