"""Helpers every test module shares: a free port, rows read straight from a database file (audit rows decoded,
row counts), and the common calls (create a thread, post) made over HTTP with the conftest `ApiClient` or through
the services of in-process parts. Processes, tokens, tmux and metrics come from `bridge.testing`."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from bridge.domain.models import CreateThreadInput, PostMessageInput
from bridge.services import messages as message_service
from bridge.services import threads as thread_service
from bridge.services.core import Call
from bridge.store.rows import scalar

if TYPE_CHECKING:
    from conftest import ApiClient

    from bridge.wiring import Parts


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------------- database file
@contextlib.contextmanager
def _reading(db: Path | str | Parts) -> Iterator[apsw.Connection]:
    """A plain connection to the file (of in-process parts, or a path; no pragma changes its mode), waiting up to
    5 s for a lock; closed after."""
    conn = apsw.Connection(str(db.bridge.settings.db_path if hasattr(db, "bridge") else db))
    conn.set_busy_timeout(5000)
    try:
        yield conn
    finally:
        conn.close()


def db_rows(db: Path | str | Parts, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the database file, as tuples."""
    with _reading(db) as conn:
        return [tuple(row) for row in conn.execute(sql, params)]


def dict_rows(db: Path | str | Parts, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a query on the database file, each a dict of its column names."""
    with _reading(db) as conn:
        cursor = conn.execute(sql, params)
        return [dict(zip([d[0] for d in cursor.getdescription()], row, strict=True)) for row in cursor]


def audit_rows(db: Path | str | Parts, where: str = "1", params: tuple[Any, ...] = (),
               **equal: Any) -> list[dict[str, Any]]:
    """Audit events of the database (file or parts) in insertion order, matching the SQL `where` and every
    `column=value` of `equal`; `details` decoded ({} when empty)."""
    clauses = " AND ".join([f"({where})", *(f"{column} = ?" for column in equal)])
    found = dict_rows(db, f"SELECT * FROM audit_events WHERE {clauses} ORDER BY audit_id", (*params, *equal.values()))
    return [{**row, "details": json.loads(row["details"]) if row["details"] else {}} for row in found]


def row_counts(parts: Parts, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows in each of `tables` of in-process parts (what a refused call must leave unchanged)."""
    return parts.bridge.store.read(lambda conn: {t: scalar(conn, f"SELECT count(*) FROM {t}") for t in tables})


# ------------------------------------------------------------------------------------------------- over HTTP
@dataclass
class ThreadTarget:
    """A live server's client and parts, a token, and a thread to aim calls at."""

    api: Any
    parts: Any
    token: str
    thread_id: str


def new_thread(api: ApiClient, token: str, participants: list[Any], title: str = "Review", **extra: Any) -> str:
    """create_thread (a workflow unless `type` is given) that must succeed; its id."""
    extra.setdefault("type", "workflow")
    return api.ok("create_thread", token, title=title, participants=list(participants), **extra)["thread_id"]


def post(api: ApiClient, token: str, thread_id: str, body: str, kind: str = "chat", **extra: Any) -> dict[str, Any]:
    """post_message that must succeed; its result (`seq`, `message_id`, ...)."""
    return api.ok("post_message", token, thread_id=thread_id, schema_version=1, kind=kind, body=body, **extra)


# ------------------------------------------------------------------------------------------------- services
def create_thread(parts: Parts, coordinator: Call, participants: tuple[str, ...], title: str = "t") -> str:
    """A workflow thread created through the thread service by `coordinator`; its id."""
    request = CreateThreadInput(title=title, type="workflow", participants=list(participants))
    return str(thread_service.create_thread(parts.bridge, coordinator, request)["thread_id"])


def post_as(parts: Parts, sender: Call, thread_id: str, body: str) -> dict[str, Any]:
    """A chat message posted through the message service by `sender`; its result."""
    request = PostMessageInput(thread_id=thread_id, schema_version=1, kind="chat", body=body)
    return message_service.post_message(parts.bridge, sender, request)
