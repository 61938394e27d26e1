"""The service container and what every use case shares: the caller, audit records, events, visibility."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.domain.authz import Op, Principal, check_workspace, require
from bridge.domain.identifiers import now_ms
from bridge.domain.ratelimit import RefusalAuditLimiter, refusal_key
from bridge.domain.vocabulary import Reason
from bridge.errors import BridgeError, IdempotencyConflict, NotFound, RateLimited, Unavailable
from bridge.services.waits import WaitSlots
from bridge.settings import Settings
from bridge.store import audit as audit_store
from bridge.store import control as control_store
from bridge.store import savepoint
from bridge.store import threads as thread_store
from bridge.store.engines import Connection, Database

T = TypeVar("T")
log = logging.getLogger("bridge.services")

BRIDGE_SENDER = "bridge"  # sender id of the bridge's own system messages


@dataclass(frozen=True)
class Call:
    """Who is calling, and the request id that ties logs, audit and responses together."""

    principal: Principal
    request_id: str | None = None


class EventHub:
    """Synchronous publish/subscribe for things that happened (metrics and logs listen); emitted after COMMIT."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call `listener(name, fields)` for every event."""
        self._listeners.append(listener)

    def emit(self, name: str, **fields: Any) -> None:
        """Deliver an event to every listener; a failing listener never breaks the caller."""
        for listener in self._listeners:
            try:
                listener(name, fields)
            except Exception:
                log.exception("event listener failed", extra={"event": name})


@dataclass
class Bridge:
    """Everything a use case needs: settings, the store, the event hub, this process's long-poll slots and share of
    the refusal-audit budget, a clock."""

    settings: Settings
    store: Database
    events: EventHub = field(default_factory=EventHub)
    clock: Callable[[], int] = now_ms
    waits: WaitSlots = field(init=False)
    refusal_audits: RefusalAuditLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.waits = WaitSlots(self.settings.long_poll_per_agent, self.settings.long_poll_limit)
        self.refusal_audits = RefusalAuditLimiter.share(self.settings.refusal_audits_per_min,
                                                        self.settings.refusal_audit_burst, self.settings.processes)

    @property
    def workspace(self) -> str:
        return self.settings.workspace


@dataclass
class Pending:
    """Work decided inside a transaction that must happen after COMMIT (events to emit, an error to raise)."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: BridgeError | None = None

    def emit(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))


def audit(conn: Connection, bridge: Bridge, call: Call, operation: str, *, thread_id: str | None = None,
          outcome: str = "ok", reason: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Append an audit event in the caller's transaction."""
    audit_store.insert(conn, {
        "occurred_at": bridge.clock(), "workspace_id": bridge.workspace, "actor": call.principal.agent_id,
        "actor_role": call.principal.role, "operation": operation, "outcome": outcome, "thread_id": thread_id,
        "request_id": call.request_id, "reason": reason, "details": details,
    })


def audit_refusal(bridge: Bridge, call: Call, operation: str, error: BridgeError, *, key: str,
                  thread_id: str | None = None, conn: Connection | None = None) -> None:
    """Audit a refusal, rate-limited per actor (`key`, see `refusal_key`): the one rule for refusals raised inside
    a service write and for the 401/403 the HTTP edge sees. A refusal beyond the actor's budget gets no row but is
    counted (event `refusal_audit_suppressed`, a metric); the actor's next audited refusal comes with a
    `refusals_suppressed` row saying how many were held back. With `conn`, the rows go into that transaction;
    without, into a write of their own (none at all when suppressed)."""
    error.audited = True
    admission = bridge.refusal_audits.admit(key)
    if not admission.audit:
        bridge.events.emit("refusal_audit_suppressed", operation=operation, actor=key.split(":", 1)[0])
        return

    def rows(conn: Connection) -> None:
        if admission.suppressed_before:
            audit(conn, bridge, call, "refusals_suppressed", outcome="suppressed",
                  details={"count": admission.suppressed_before, "actor_key": key})
        audit(conn, bridge, call, operation, thread_id=thread_id, outcome="refused", reason=error.code,
              details={"message": error.message, **error.details})

    if conn is not None:
        rows(conn)
        return
    try:
        bridge.store.write(rows)
    except BridgeError:
        log.warning("could not audit a refusal", extra={"event": "audit_failed", "request_id": call.request_id})


def audited_write(bridge: Bridge, call: Call, operation: str, thread_id: str | None,
                  work: Callable[[Connection, Pending], T]) -> T:
    """Run a mutation in one write transaction; a refusal rolls the work back and is itself audited (per-actor
    rate limit: `audit_refusal`)."""
    def transaction(conn: Connection) -> tuple[T | None, Pending]:
        pending = Pending()
        try:
            with savepoint(conn):
                return work(conn, pending), pending
        except BridgeError as error:
            if isinstance(error, Unavailable | RateLimited):  # load shedding: counted by metrics, not audited
                raise
            audit_refusal(bridge, call, operation, error, key=refusal_key(call.principal.agent_id, None),
                          thread_id=thread_id, conn=conn)
            return None, Pending(error=error)

    result, pending = bridge.store.write(transaction)
    if pending.error is not None:
        raise pending.error
    for name, fields in pending.events:
        bridge.events.emit(name, **fields)
    return result  # type: ignore[return-value]


def replay_of(existing: dict[str, Any] | None, *, stored_hash: str, fingerprint: str, key: str,
              ident: str) -> dict[str, Any] | None:
    """The row a repeated request already wrote (`existing`, found by its idempotency key), or None for a new
    request; IdempotencyConflict when the key (the input field `key`) was used with another payload: the row's
    `stored_hash` column differs from `fingerprint`. The error names the row by its `ident` column."""
    if existing is None:
        return None
    if existing[stored_hash] != fingerprint:
        raise IdempotencyConflict(f"{key} was used with a different payload", {ident: existing[ident]})
    return existing


def check_frozen(conn: Connection, operation: str) -> None:
    """Raise UNAVAILABLE (`frozen`) when a write freeze covers this operation."""
    mode = control_store.get_flag(conn, "freeze")
    if mode == "all" or (mode == "create" and operation == "create_thread"):
        raise Unavailable("writes are frozen by an operator", {"reason": Reason.FROZEN, "freeze": mode}, retry_after=30)


def visible_thread(conn: Connection, call: Call, thread_id: str, op: Op) -> dict[str, Any]:
    """Load a thread the caller may `op` on; NOT_FOUND for unknown or other-workspace ids, FORBIDDEN by role."""
    thread = thread_store.get_thread_seen_by(conn, thread_id, call.principal.agent_id)
    if thread is None:
        raise NotFound("thread not found", {"thread_id": thread_id})
    if thread["workspace_id"] != call.principal.workspace_id:
        raise NotFound("thread not found", {"thread_id": thread_id})
    check_workspace(call.principal, thread["workspace_id"])
    require(call.principal, op, is_member=bool(thread.pop("is_member")))
    return thread
