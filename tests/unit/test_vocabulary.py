"""The one vocabulary: every event type, role and reason code the bridge writes or compares is a member of
bridge/domain/vocabulary.py, and the module stays importable without pydantic."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bridge.domain import lifecycle, loopguard, summary
from bridge.domain.vocabulary import AGENT_EVENTS, CLOSING_EVENTS, PROGRESS_EVENTS, TOKEN_ROLES, EventType, Reason, Role

SOURCE = Path(__file__).resolve().parents[2] / "bridge"
# (what a string literal is used as, the registry it must belong to)
REGISTRIES: dict[str, type] = {"event_type": EventType, "reason": Reason, "role": Role}
DEMO = SOURCE / "demo"  # its roles are a chat model's (user, assistant) and thread roles (reviewer), not the bridge's


def test_the_summary_the_loop_guard_and_the_lifecycle_use_the_registry():
    assert summary.CLOSING_EVENTS is CLOSING_EVENTS and loopguard.PROGRESS_EVENTS is PROGRESS_EVENTS
    assert {"finding_verified", "finding_resolved", "resolved"} == CLOSING_EVENTS  # every accepted closing event
    assert summary.OPEN_ITEM_EVENTS == ("finding_reported", "finding_resolved", "finding_verified", "resolved")
    for name in (*CLOSING_EVENTS, *PROGRESS_EVENTS, *AGENT_EVENTS, *lifecycle.EVENT_TYPES.values(),
                 *summary.OPEN_ITEM_EVENTS):
        assert isinstance(name, EventType), name
    assert lifecycle.TransitionPlan("active", "active", "noop").event_type is EventType.THREAD_STATUS_UNCHANGED
    assert set(TOKEN_ROLES) < set(Role) and all(type(role) is str for role in TOKEN_ROLES)  # plain: click.Choice


def test_an_open_item_is_closed_by_each_closing_event():
    for closing in CLOSING_EVENTS:
        finding = {"event_type": "finding_reported", "message_id": "m1", "seq": 1, "sender_agent_id": "a",
                   "metadata": {"finding_id": "F1"}, "body": "bug", "in_reply_to": None}
        close = {"event_type": closing, "message_id": "m2", "seq": 2, "metadata": {"finding_id": "F1"},
                 "in_reply_to": None}
        assert summary.open_items([finding, close]) == [], closing


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _names(node: ast.AST) -> str | None:
    """Which registry an expression reads from: `x.role`, `role`, `x["event_type"]`, `x.get("reason")`..."""
    if isinstance(node, ast.Attribute) and node.attr in REGISTRIES:
        return node.attr
    if isinstance(node, ast.Name) and node.id in REGISTRIES:
        return node.id
    if isinstance(node, ast.Subscript) and _literal(node.slice) in REGISTRIES:
        return _literal(node.slice)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and node.args and _literal(node.args[0]) in REGISTRIES):
        return _literal(node.args[0])
    return None


def uses(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, registry, literal) for each string literal written or compared as an event type, role or reason:
    a dict entry `{"event_type": "x"}`, a keyword `role="x"`, or a comparison `x.role == "x"` / `in ("x", ...)`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None and _literal(key) in REGISTRIES and _literal(value) is not None:
                    yield node.lineno, _literal(key), _literal(value)
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in ("event_type", "role") and _literal(keyword.value) is not None:
                    yield node.lineno, keyword.arg, _literal(keyword.value)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            registry = next((name for side in sides if (name := _names(side)) is not None), None)
            if registry is None:
                continue
            for side in sides:
                values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                for value in values:
                    if _literal(value) is not None:
                        yield node.lineno, registry, _literal(value)


def test_every_literal_event_type_role_and_reason_in_the_source_is_in_the_registry():
    strays = [f"{path.relative_to(SOURCE.parent)}:{line}: {registry} {value!r}"
              for path in sorted(SOURCE.rglob("*.py"))
              for line, registry, value in uses(ast.parse(path.read_text(), str(path)))
              if value not in {member.value for member in REGISTRIES[registry]}
              and not (registry == "role" and DEMO in path.parents)]
    assert strays == [], "add these to bridge/domain/vocabulary.py (and use the member):\n" + "\n".join(strays)


def test_the_scan_finds_a_new_literal():
    found = list(uses(ast.parse('post({"event_type": "x_done"}); f(role="boss")\nif m["reason"] == "odd": pass')))
    assert {(registry, value) for _, registry, value in found} == {
        ("event_type", "x_done"), ("role", "boss"), ("reason", "odd")}


def test_the_vocabulary_imports_no_pydantic():
    code = "import sys, bridge.domain.vocabulary; print(sorted(m for m in sys.modules if m.startswith('pydantic')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
