"""What the reliability scenarios' clients were told, and the audit of a read-back against it.

Record every post (`attempt`, then `record` its reply: acked / refused / in doubt), read every thread back
(`bridge.testing.client.read_thread`), and `audit(...)` compares: acknowledged posts missing or changed, seq gaps,
duplicates, refused posts that were committed anyway, messages nobody sent. The message body starts with the
idempotency key, which is how a message is matched to its post. Nothing here trusts the server's own account.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.testing.client import Reply


@dataclass
class Post:
    """One post as its client knows it."""

    key: str
    thread_id: str
    body: str
    acked: dict[str, Any] | None = None  # {"seq", "message_id"} of the first 200
    refusals: list[str] = field(default_factory=list)  # "<status> <code>/<reason>" of each refusal
    in_doubt: int = 0  # attempts that got no answer after the request may have been sent
    replayed_after_doubt: bool = False  # a retry after no answer was a replay: it had committed unacknowledged


@dataclass
class Audit:
    """What the read-back shows against the ledger."""

    acked: int
    lost: list[str]  # keys acknowledged but missing (or changed) in the read-back
    gaps: int  # seqs missing from 1..latest, over all threads
    duplicates: int  # messages beyond the first for one key
    refused_committed: list[str]  # keys only ever refused (never acked, never in doubt) that were committed
    unexpected: int  # messages whose key no client used
    messages: int
    committed_unacked: int  # in-doubt posts whose retry was a replay


class Ledger:
    """The clients' record of every post (thread-safe). Bodies start with the idempotency key."""

    def __init__(self) -> None:
        self.posts: dict[str, Post] = {}
        self._lock = threading.Lock()

    @staticmethod
    def body(key: str, filler: str = "") -> str:
        return f"{key} {filler}".rstrip()

    def attempt(self, key: str, thread_id: str, body: str) -> Post:
        with self._lock:
            return self.posts.setdefault(key, Post(key, thread_id, body))

    @staticmethod
    def payload(post: Post) -> dict[str, Any]:
        """The post_message arguments of a post (its key is the idempotency key: a retry is the same request)."""
        return {"thread_id": post.thread_id, "schema_version": 1, "kind": "chat", "body": post.body,
                "idempotency_key": post.key}

    def record(self, key: str, reply: Reply) -> str:
        """File a reply; return "acked", "refused", "in_doubt" or "not_sent"."""
        with self._lock:
            post = self.posts[key]
            if reply.ok:
                if post.acked is None:
                    post.acked = {"seq": reply.body["seq"], "message_id": reply.body["message_id"]}
                    post.replayed_after_doubt = bool(post.in_doubt and reply.body.get("replayed"))
                return "acked"
            if reply.status is not None:
                post.refusals.append(f"{reply.status} {reply.code}/{reply.reason}")
                return "refused"
            if reply.sent:
                post.in_doubt += 1
                return "in_doubt"
            return "not_sent"

    def acked_keys(self) -> list[str]:
        return [k for k, p in self.posts.items() if p.acked is not None]

    def audit(self, threads: Mapping[str, list[dict[str, Any]]]) -> Audit:
        """Compare the read-back (every message of every thread the ledger used) with what clients were told."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        gaps = unexpected = total = 0
        for messages in threads.values():
            seqs = [m["seq"] for m in messages]
            total += len(messages)
            gaps += (max(seqs) - len(set(seqs))) if seqs else 0
            for m in messages:
                key = str(m.get("body", "")).split(" ", 1)[0]
                if key in self.posts:
                    by_key.setdefault(key, []).append(m)
                elif m.get("kind") != "system":
                    unexpected += 1
        lost = []
        for key, post in self.posts.items():
            found = by_key.get(key, [])
            if post.acked is not None and not any(
                    m["message_id"] == post.acked["message_id"] and m["seq"] == post.acked["seq"]
                    and m["body"] == post.body and m["thread_id"] == post.thread_id for m in found):
                lost.append(key)
        refused_committed = [k for k, p in self.posts.items()
                             if p.acked is None and not p.in_doubt and p.refusals and by_key.get(k)]
        return Audit(acked=len(self.acked_keys()), lost=lost, gaps=gaps,
                     duplicates=sum(len(v) - 1 for v in by_key.values()), refused_committed=refused_committed,
                     unexpected=unexpected, messages=total,
                     committed_unacked=sum(1 for p in self.posts.values() if p.replayed_after_doubt))
