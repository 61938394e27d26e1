"""Who may do what (docs/api.md, "Identity and roles"): the one place for role, membership and workspace rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from bridge.domain.vocabulary import Reason, Role
from bridge.errors import Forbidden, WorkspaceMismatch


class Op(Enum):
    """Kinds of operation the role table distinguishes."""

    READ = "read"  # threads, messages, summaries
    ACK = "ack"  # ack_read, heartbeat_session, inbox
    POST = "post"
    MANAGE = "manage"  # create threads, participants, status, triggers
    AUDIT = "audit"


# role -> op -> scope: "any" (whole workspace), "own" (threads listing the agent), or absent (refused)
_TABLE: dict[str, dict[Op, str]] = {
    Role.PARTICIPANT: {Op.READ: "own", Op.ACK: "own", Op.POST: "own"},
    Role.COORDINATOR: {Op.READ: "any", Op.ACK: "any", Op.POST: "any", Op.MANAGE: "any", Op.AUDIT: "any"},
    Role.AUDITOR: {Op.READ: "any", Op.ACK: "any", Op.AUDIT: "any"},
}


@dataclass(frozen=True)
class Principal:
    """The verified identity of a caller: token claims, or an operator at the CLI."""

    agent_id: str
    workspace_id: str
    role: str
    session_id: str
    jti: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR


def require(principal: Principal, op: Op, *, is_member: bool | None = None) -> None:
    """Raise FORBIDDEN unless `principal` may perform `op` (on a thread, given membership when it applies)."""
    if principal.is_operator:
        return
    scope = _TABLE.get(principal.role, {}).get(op)
    if scope is None:
        raise Forbidden(f"role {principal.role!r} may not {op.value}",
                        {"reason": Reason.ROLE_NOT_ALLOWED, "role": principal.role, "operation": op.value})
    if scope == "own" and is_member is False:
        raise Forbidden("not a participant of this thread",
                        {"reason": Reason.NOT_PARTICIPANT, "role": principal.role, "operation": op.value})


def sees_all_threads(principal: Principal) -> bool:
    """True when the principal's reads are not restricted to its own threads."""
    return principal.is_operator or _TABLE.get(principal.role, {}).get(Op.READ) == "any"


def check_workspace(principal: Principal, workspace_id: str | None) -> None:
    """Raise WORKSPACE_MISMATCH when a requested or stored workspace differs from the caller's."""
    if workspace_id is not None and workspace_id != principal.workspace_id:
        raise WorkspaceMismatch("token workspace does not match the requested workspace",
                                {"token_workspace": principal.workspace_id, "requested_workspace": workspace_id})


def check_hint(principal: Principal, field: str, value: str | None, claim_value: str) -> None:
    """Raise FORBIDDEN (`claim_mismatch`) when an identity hint in a payload differs from the claims."""
    if value is not None and value != claim_value:
        raise Forbidden(f"{field} does not match the token's claims",
                        {"reason": Reason.CLAIM_MISMATCH, "field": field})


def check_identity_hints(principal: Principal, hints: Iterable[tuple[str, str, str]]) -> None:
    """The one identity-hint rule (docs/api.md): each `(field, claim, value)` hint a payload carries must equal the
    caller's claim: `workspace_id` -> WORKSPACE_MISMATCH, any other -> FORBIDDEN `claim_mismatch`."""
    for field, claim, value in hints:
        if claim == "workspace_id":
            check_workspace(principal, value)
        else:
            check_hint(principal, field, value, getattr(principal, claim))
