"""The statements a post needs keep every rule: refusals audited, failures roll back, the loop guard's counter, strict
JSON (the store's own write path, savepoints included, is tested in tests/test_store_writer.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import call_as
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.domain import jsonparse
from bridge.domain.jsonparse import parse_json
from bridge.domain.models import CreateThreadInput, PostMessageInput, UpdateThreadStatusInput
from bridge.errors import InvalidArgument, ThreadClosed
from bridge.services import messages as message_service
from bridge.services import threads as thread_service
from bridge.services.core import Call
from bridge.wiring import Parts

# ------------------------------------------------------------------------------------------------- strict JSON
# ASCII (brackets, backslashes) and the code points around the surrogates (U+D800-U+DFFF)
_CHARACTERS = st.characters(max_codepoint=0x7F) | st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010)
_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    alphabet=_CHARACTERS, max_size=6)
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=3), inner, max_size=3), max_leaves=40)


def _outcome(parse: Any, raw: bytes | str) -> Any:
    try:
        return "ok", parse(raw)
    except InvalidArgument as error:
        return "refused", error.details["reason"]


def _walked(raw: bytes | str) -> Any:
    """parse_json before its shortcut: the same decoder, then always the full depth/surrogate walk."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    value = json.loads(text, object_pairs_hook=jsonparse._no_duplicates, parse_constant=jsonparse._reject_constant,
                       parse_float=jsonparse._finite_float)
    jsonparse._check(value, 1)
    return value


@settings(max_examples=300, deadline=None)
@given(value=_VALUES, ascii_only=st.booleans(), as_text=st.booleans(), depth=st.integers(0, 40))
def test_strict_json_skips_its_walk_only_when_the_walk_cannot_refuse(value: Any, ascii_only: bool, as_text: bool,
                                                                      depth: int) -> None:
    """Lone surrogates (escaped, or raw in a str body) and nesting around the limit give the same outcome as the
    full walk."""
    text = "[" * depth + json.dumps(value, ensure_ascii=ascii_only) + "]" * depth
    if not as_text and not ascii_only:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            as_text = True  # raw lone surrogates only reach parse_json as a str
    raw: bytes | str = text if as_text else text.encode("utf-8")
    assert _outcome(parse_json, raw) == _outcome(_walked, raw)


# ------------------------------------------------------------------------------------------------- post_message
def _post(parts: Parts, call: Call, thread_id: str, **fields: Any) -> dict[str, Any]:
    return message_service.post_message(parts.bridge, call, PostMessageInput(
        thread_id=thread_id, schema_version=1, **{"kind": "chat", "body": "hello", **fields}))


def _no_progress(parts: Parts, thread_id: str) -> tuple[int, int]:
    return parts.bridge.store.read(lambda c: c.execute(
        "SELECT latest_seq, no_progress FROM threads WHERE thread_id = ?", (thread_id,)).fetchall()[0])


@pytest.mark.sqlite_only  # counts the statements of SQLite's writer connection
def test_the_loop_guard_counter_is_stored_with_the_seq(make_parts):
    """Chat counts one more turn without progress, a progress event resets it, a system message leaves it alone;
    a post writes the thread row once."""
    parts = make_parts(write_quota_per_min=0, loop_guard_turns=0)
    coord, rev = call_as("coord", "coordinator"), call_as("rev")
    thread_id = thread_service.create_thread(parts.bridge, coord, CreateThreadInput(
        title="guard", type="workflow", participants=["rev"]))["thread_id"]
    _post(parts, rev, thread_id)
    _post(parts, rev, thread_id)
    assert _no_progress(parts, thread_id) == (2, 2)
    _post(parts, coord, thread_id, kind="system")
    assert _no_progress(parts, thread_id) == (3, 2)
    _post(parts, rev, thread_id, kind="event", metadata={"event_type": "fix_pushed", "commit": "abc"})
    assert _no_progress(parts, thread_id) == (4, 0)

    statements: list[str] = []
    conn = parts.bridge.store._writer_conn
    conn.exec_trace = lambda _cursor, sql, _bindings: statements.append(sql.strip()) or True
    _post(parts, rev, thread_id, idempotency_key="k1")
    conn.exec_trace = None
    assert _no_progress(parts, thread_id) == (5, 1)
    assert len([sql for sql in statements if sql.startswith("UPDATE threads")]) == 1, statements


def test_a_refused_post_rolls_its_work_back_and_is_audited_in_the_same_transaction(make_parts):
    """A refusal inside the write (here a closed thread) writes its audit row and nothing else."""
    parts = make_parts(write_quota_per_min=0, loop_guard_turns=0)
    coord, rev = call_as("coord", "coordinator"), call_as("rev")
    thread_id = thread_service.create_thread(parts.bridge, coord, CreateThreadInput(
        title="closing", type="workflow", participants=["rev"]))["thread_id"]
    _post(parts, rev, thread_id)
    thread_service.update_thread_status(parts.bridge, coord, UpdateThreadStatusInput(
        thread_id=thread_id, status="closed", reason="done"))
    before = _no_progress(parts, thread_id)
    with pytest.raises(ThreadClosed):
        _post(parts, rev, thread_id, idempotency_key="late")
    assert _no_progress(parts, thread_id) == before
    refused = parts.bridge.store.read(lambda c: c.execute(
        "SELECT operation, reason FROM audit_events WHERE thread_id = ? AND outcome = 'refused'",
        (thread_id,)).fetchall())
    assert refused == [("post_message", "THREAD_CLOSED")]
