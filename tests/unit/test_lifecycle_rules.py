"""Pure unit tests of the domain rules (no database, no server): the §5 transition table and owner rule, and the
§3 role table behind `require()`. Expected values are written from the SPEC."""

from __future__ import annotations

import pytest

from bridge.domain import lifecycle
from bridge.domain.authz import Op, Principal, check_hint, check_workspace, require, sees_all_threads
from bridge.domain.lifecycle import plan_transition
from bridge.errors import Forbidden, InvalidThreadTransition, WorkspaceMismatch

STATUSES = ("active", "blocked", "resolved", "closed")
NOOP, NO = "noop", None
# SPEC §5, row = from, column = to; the cell names the operation (None = refused)
TABLE = {
    "active":   {"active": NOOP,      "blocked": "escalate", "resolved": "resolve", "closed": "close"},
    "blocked":  {"active": "unblock", "blocked": NOOP,       "resolved": NO,        "closed": "close"},
    "resolved": {"active": "reopen",  "blocked": NO,         "resolved": NOOP,      "closed": "close"},
    "closed":   {"active": NO,        "blocked": NO,         "resolved": NO,        "closed": NOOP},
}
EVENT_TYPES = {"escalate": "thread_escalated", "resolve": "thread_resolved", "close": "thread_closed",
               "unblock": "thread_unblocked", "reopen": "thread_reopened"}
CELLS = [(a, b) for a in STATUSES for b in STATUSES]
OVERRIDE = "coordinator_override: unit test"


def plan(current: str, target: str, *, actor: str = "coord", reason: str = OVERRIDE, owner: str | None = None):
    return plan_transition(current, target, actor_agent_id=actor, reason=reason, owner_agent_id=owner)


# --------------------------------------------------------------------------------------------------- plan_transition
@pytest.mark.parametrize(("current", "target"), CELLS, ids=[f"{a}->{b}" for a, b in CELLS])
def test_transition_table(current, target):
    expected = TABLE[current][target]
    if expected is NO:
        with pytest.raises(InvalidThreadTransition) as refused:
            plan(current, target)
        assert refused.value.http_status == 409
        assert refused.value.code == "INVALID_THREAD_TRANSITION"
        assert refused.value.details["from_status"] == current
        assert refused.value.details["to_status"] == target
        assert target not in refused.value.details["allowed"]
        return
    result = plan(current, target)
    assert (result.from_status, result.to_status) == (current, target)
    if expected == NOOP:
        assert result.changed is False
        assert result.opens_escalation is False
        assert result.closes_escalation is False
        return
    assert result.operation == expected
    assert result.changed is True
    assert result.event_type == EVENT_TYPES[expected]
    assert result.opens_escalation is (target == "blocked")
    assert result.closes_escalation is (current == "blocked")


@pytest.mark.parametrize("current", STATUSES)
def test_allowed_targets(current):
    expected = {t for t, op in TABLE[current].items() if op not in (NO, NOOP)}
    assert set(lifecycle.allowed_targets(current)) == expected


@pytest.mark.parametrize("current", STATUSES)
def test_refusals_do_not_depend_on_reason_or_owner(current):
    """An override prefix or being the owner never makes a refused transition allowed."""
    for target, op in TABLE[current].items():
        if op is not NO:
            continue
        for reason in ("plain", "human_override: x", "coordinator_override: x"):
            with pytest.raises(InvalidThreadTransition):
                plan(current, target, actor="owner", reason=reason, owner="owner")


@pytest.mark.parametrize("status", STATUSES)
def test_same_status_is_a_noop_even_under_the_owner_rule(status):
    result = plan(status, status, actor="someone-else", reason="plain", owner="owner")
    assert result.changed is False


# --------------------------------------------------------------------------------------------------- owner rule
@pytest.mark.parametrize("target", ["active", "closed"])
def test_owner_rule_with_owner(target):
    # the owner, any reason
    assert plan("blocked", target, actor="owner", reason="plain", owner="owner").changed
    # anyone with an override prefix
    for prefix in lifecycle.OVERRIDE_PREFIXES:
        assert plan("blocked", target, actor="other", reason=f"{prefix} because", owner="owner").changed
    # anyone else without one, including reasons that only contain a prefix
    for reason in ("plain", "no human_override: here", " human_override: leading space", "human_override",
                   "HUMAN_OVERRIDE: shouting", "coordinator-override: dash"):
        with pytest.raises(Forbidden) as refused:
            plan("blocked", target, actor="other", reason=reason, owner="owner")
        assert refused.value.http_status == 403
        assert refused.value.code == "FORBIDDEN"
        assert refused.value.details.get("reason")


def test_owner_rule_without_owner():
    assert plan("blocked", "active", actor="anyone", reason="plain", owner=None).changed
    with pytest.raises(Forbidden):
        plan("blocked", "closed", actor="anyone", reason="plain", owner=None)
    assert plan("blocked", "closed", actor="anyone", reason="human_override: x", owner=None).changed
    assert plan("blocked", "closed", actor="anyone", reason="coordinator_override: x", owner=None).changed


@pytest.mark.parametrize(("current", "target"), [("active", "closed"), ("resolved", "closed"), ("resolved", "active"),
                                                 ("active", "blocked"), ("active", "resolved")])
def test_owner_rule_only_applies_to_blocked(current, target):
    assert plan(current, target, actor="other", reason="plain", owner="owner").changed


def test_override_prefixes():
    assert lifecycle.is_override("human_override: operator said so")
    assert lifecycle.is_override("coordinator_override:x")
    assert not lifecycle.is_override("override: no")
    assert not lifecycle.is_override("x human_override: no")
    assert not lifecycle.is_override("")


# --------------------------------------------------------------------------------------------------- require()
def who(role: str, agent_id: str = "a1", workspace: str = "default") -> Principal:
    return Principal(agent_id=agent_id, workspace_id=workspace, role=role, session_id=f"{agent_id}-s")


ANY, OWN, DENY = "any", "own", "deny"
# SPEC §3 role table
ROLE_TABLE = {
    "participant": {Op.READ: OWN, Op.ACK: OWN, Op.POST: OWN, Op.MANAGE: DENY, Op.AUDIT: DENY},
    "coordinator": {Op.READ: ANY, Op.ACK: ANY, Op.POST: ANY, Op.MANAGE: ANY, Op.AUDIT: ANY},
    "auditor": {Op.READ: ANY, Op.ACK: ANY, Op.POST: DENY, Op.MANAGE: DENY, Op.AUDIT: ANY},
    "operator": {Op.READ: ANY, Op.ACK: ANY, Op.POST: ANY, Op.MANAGE: ANY, Op.AUDIT: ANY},  # the CLI
    "admin": dict.fromkeys(Op, DENY),  # an unknown role gets nothing
    "": dict.fromkeys(Op, DENY),
}
ROLE_CASES = [(role, op) for role in ROLE_TABLE for op in Op]


def test_role_table_covers_every_op():
    assert all(set(ops) == set(Op) for ops in ROLE_TABLE.values())


@pytest.mark.parametrize(("role", "op"), ROLE_CASES, ids=[f"{r or 'empty'}-{o.value}" for r, o in ROLE_CASES])
def test_require(role, op):
    scope = ROLE_TABLE[role][op]
    principal = who(role)
    for is_member in (True, False, None):
        allowed = scope == ANY or (scope == OWN and is_member is not False)
        if allowed:
            require(principal, op, is_member=is_member)
            continue
        with pytest.raises(Forbidden) as refused:
            require(principal, op, is_member=is_member)
        assert refused.value.http_status == 403
        expected_reason = "not_participant" if scope == OWN else "role_not_allowed"
        assert refused.value.details["reason"] == expected_reason, (role, op, is_member)


@pytest.mark.parametrize("role", list(ROLE_TABLE))
def test_sees_all_threads(role):
    assert sees_all_threads(who(role)) is (ROLE_TABLE[role][Op.READ] == ANY)


def test_check_workspace():
    check_workspace(who("coordinator"), None)
    check_workspace(who("coordinator"), "default")
    with pytest.raises(WorkspaceMismatch) as refused:
        check_workspace(who("coordinator"), "other")
    assert (refused.value.http_status, refused.value.code) == (403, "WORKSPACE_MISMATCH")
    with pytest.raises(WorkspaceMismatch):
        check_workspace(who("operator", workspace="ws2"), "default")


def test_check_hint():
    principal = who("participant", agent_id="alice")
    check_hint(principal, "sender_agent_id", None, "alice")
    check_hint(principal, "sender_agent_id", "alice", "alice")
    for spoof in ("bob", "Alice", "alice ", ""):
        with pytest.raises(Forbidden) as refused:
            check_hint(principal, "sender_agent_id", spoof, "alice")
        assert refused.value.details["reason"] == "claim_mismatch"
        assert refused.value.code == "FORBIDDEN"
