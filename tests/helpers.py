"""Helpers every test module shares: a free port, row counts of in-process parts, and the common calls (create a
thread, post) made over HTTP with the conftest `ApiClient` or through the services of in-process parts. Processes,
tokens, tmux, metrics and reading a database file (`bridge.testing.database`) come from the harness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.domain.models import CreateThreadInput, PostMessageInput
from bridge.services import messages as message_service
from bridge.services import threads as thread_service
from bridge.services.core import Call
from bridge.store.rows import scalar

if TYPE_CHECKING:
    from conftest import ApiClient

    from bridge.wiring import Parts


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
