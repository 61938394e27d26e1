"""A client of a running bridge's HTTP API: one keep-alive HTTP/1.1 connection, stdlib only.

`Client.exchange` never raises for the network: a failure is a `Reply` with no status (`sent` False only when the
connection was refused, so the request certainly did nothing; any other failure leaves it in doubt). `Client.raw`
is the lean path for load generators (status and bytes; network errors raise). The module's functions are the
calls every harness user makes: create a thread, post, read a whole thread, read a metric.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from bridge.testing.processes import HOST


@dataclass
class Reply:
    """One exchange as the client saw it: status (None: no HTTP answer), lower-case headers, decoded body."""

    status: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    sent: bool = True
    ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def code(self) -> str | None:
        """The error envelope's code (None on success or when there is no envelope)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    @property
    def reason(self) -> str | None:
        """`error.details.reason` of an error envelope."""
        if self.code is None:
            return None
        return (self.body["error"].get("details") or {}).get("reason")

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


def address(target: str | int) -> tuple[str, int]:
    """(host, port) of a base URL, or of a bare port on 127.0.0.1."""
    if isinstance(target, int):
        return HOST, target
    parts = urlsplit(target)
    if not parts.hostname or not parts.port:
        raise ValueError(f"not a http://host:port URL: {target!r}")
    return parts.hostname, parts.port


class Client:
    """One keep-alive connection to a bridge (`target`: its base URL or a port on 127.0.0.1), reconnecting after
    any failure; `token` is sent as the bearer on every request unless one is given per call."""

    def __init__(self, target: str | int, token: str | None = None, timeout: float = 30.0):
        self.host, self.port = address(target)
        self.token, self.timeout = token, timeout
        self.conn: http.client.HTTPConnection | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, lower-case headers, body bytes). Network errors raise (and reconnect)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            answer = self.conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        reply_headers = {k.lower(): v for k, v in answer.getheaders()}
        if reply_headers.get("connection", "").lower() == "close":
            self.close()
        return answer.status, reply_headers, data

    def exchange(self, method: str, path: str, payload: Any = None, *, token: str | None = None,
                 headers: dict[str, str] | None = None, body: bytes | None = None) -> Reply:
        """One request (JSON `payload`, or raw `body`); never raises for the network."""
        send = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer:
            send.setdefault("Authorization", f"Bearer {bearer}")
        if payload is not None:
            body = json.dumps(payload).encode()
        if body is not None:
            send.setdefault("Content-Type", "application/json")
        started = time.perf_counter()
        try:
            status, reply_headers, data = self.raw(method, path, body, send)
        except ConnectionRefusedError as exc:
            return Reply(None, error=f"{type(exc).__name__}: {exc}", sent=False, ms=_since(started))
        except (OSError, http.client.HTTPException) as exc:
            return Reply(None, error=f"{type(exc).__name__}: {exc}", ms=_since(started))
        try:
            decoded: Any = json.loads(data) if data else None
        except ValueError:
            decoded = data.decode("utf-8", "replace")
        return Reply(status, decoded, reply_headers, ms=_since(started))

    def call(self, command: str, payload: dict[str, Any] | None = None, *, token: str | None = None) -> Reply:
        """POST /v1/mcp/<command> with a JSON body (`{}` when none)."""
        return self.exchange("POST", f"/v1/mcp/{command}", payload if payload is not None else {}, token=token)

    def get(self, path: str, *, token: str | None = None) -> Reply:
        return self.exchange("GET", path, token=token)

    def ok(self, command: str, payload: dict[str, Any] | None = None, *, token: str | None = None) -> dict[str, Any]:
        """A call that must succeed (set-up and read-back steps): its body, else RuntimeError. A call that got no
        answer is sent again on a fresh connection (up to 3 times: a kept-alive connection to a server that has
        since restarted fails once), so use it only where a repeat is harmless."""
        reply = self.call(command, payload, token=token)
        for _ in range(2):
            if reply.status is not None:
                break
            reply = self.call(command, payload, token=token)
        if not reply.ok:
            raise RuntimeError(f"{command} -> {reply.status}: {reply.body or reply.error}")
        result: dict[str, Any] = reply.body
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# --------------------------------------------------------------------------------------------------- common calls
def new_thread(client: Client, participants: list[Any], title: str = "harness thread", **extra: Any) -> str:
    """create_thread (a workflow unless `type` is given) by the client's agent with these participants; its id."""
    body = client.ok("create_thread", {"title": title, "type": "workflow", "participants": participants, **extra})
    return str(body["thread_id"])


def post(client: Client, thread_id: str, body: str, kind: str = "chat", **extra: Any) -> dict[str, Any]:
    """post_message that must succeed; its result (`seq`, `message_id`, ...)."""
    return client.ok("post_message", {"thread_id": thread_id, "schema_version": 1, "kind": kind, "body": body,
                                      **extra})


def read_thread(client: Client, thread_id: str) -> list[dict[str, Any]]:
    """Every message of a thread, paged from seq 0 (RuntimeError when a page fails)."""
    messages: list[dict[str, Any]] = []
    since = 0
    while True:
        page = client.ok("read_messages", {"thread_id": thread_id, "since_seq": since, "limit": 200})
        messages += page["messages"]
        since = page["next_seq"]
        if not page["has_more"]:
            return messages


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` (e.g. `bridge_requests_total`) whose labels include `labels`, in a
    Prometheus text exposition; None when there is none."""
    values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]
    return sum(values) if values else None
