"""The WSGI application: bottle routes over the services, one envelope for every error, request ids, metrics.

`create_app()` builds a fresh app (its own Prometheus registry, nothing global), so tests and benchmarks can make
many. The outer `RequestIdMiddleware` owns what must hold for every response, including bottle's own errors:
an `x-request-id` header and a JSON body instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bottle
from pydantic import ValidationError

import bridge as bridge_pkg
from bridge.auth.tokens import TokenVerifier
from bridge.domain.authz import Principal
from bridge.domain.identifiers import iso
from bridge.domain.jsonparse import parse_json
from bridge.domain.ratelimit import refusal_key
from bridge.domain.vocabulary import Reason, Role
from bridge.errors import (
    BridgeError,
    Internal,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WorkspaceMismatch,
)
from bridge.http.envelope import error_body, error_headers, request_id_from, to_json, validation_error
from bridge.http.metrics import Metrics
from bridge.http.openapi import build_openapi
from bridge.services.commands import COMMANDS, Command
from bridge.services.control import freeze_state
from bridge.services.core import Bridge, Call, audit_refusal
from bridge.store import control as control_store
from bridge.store.migrate import latest_version

if TYPE_CHECKING:  # the MCP endpoint is imported on the first /mcp request
    from bridge.http.mcp_endpoint import Reply

log = logging.getLogger("bridge.http")
JSON = "application/json"
_FRAMEWORK_ERRORS: dict[int, type[BridgeError]] = {
    400: InvalidArgument, 404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge, 415: UnsupportedMediaType,
}


class Api:
    """Route handlers bound to one bridge, one verifier and one metrics registry."""

    def __init__(self, bridge: Bridge, verifier: TokenVerifier, metrics: Metrics, bind_host: str):
        self.bridge, self.verifier, self.metrics = bridge, verifier, metrics
        self.bind_host = bind_host  # where the server listens: a loopback bind makes /mcp check the Host header
        self.openapi = to_json(build_openapi())

    # ------------------------------------------------------------------------------------------- commands
    def command(self, name: str) -> bytes:
        environ = bottle.request.environ
        request_id = environ["bridge.request_id"]
        command = COMMANDS.get(name)
        environ["bridge.command"] = name if command else "unknown"
        try:
            if command is None:
                raise NotFound("unknown command", {"command": name})
            raw = self._read_body(environ)
            principal = self._authenticate(environ)
        except BridgeError as error:
            if error.http_status in (401, 403):
                self._audit_refusal(command, None, request_id, error, None)
            return self._error(error)
        try:
            result = self._execute(command, principal, request_id, parse_json(raw) if raw else {})
        except BridgeError as error:
            return self._error(error)
        environ["bridge.code"] = "OK"
        bottle.response.content_type = JSON
        return to_json(result)

    def _execute(self, command: Command, principal: Principal, request_id: str, arguments: Any) -> dict[str, Any]:
        """Validate `arguments` and run `command` as `principal`: the one path of `/v1` calls and MCP tool calls.

        A 401/403 the service did not audit itself (reads, checks made before a write) is audited here, so every
        refusal is audited exactly once whichever surface it came through."""
        payload: Any = None
        try:
            try:
                payload = command.input.model_validate(arguments)
            except ValidationError as exc:
                raise validation_error(exc) from exc
            return command.handler(self.bridge, Call(principal, request_id), payload)
        except BridgeError as error:
            if error.http_status in (401, 403) and not error.audited:
                self._audit_refusal(command, principal, request_id, error, getattr(payload, "thread_id", None))
            raise

    def mcp(self) -> bytes:
        """`POST /mcp`: one JSON-RPC message in, one JSON reply out (202 and no body for notifications)."""
        environ = bottle.request.environ
        request_id = environ["bridge.request_id"]
        environ["bridge.command"] = "mcp"
        headers = _request_headers(environ)
        from bridge.http import mcp_endpoint  # on the first /mcp: the MCP SDK's types cost ~30 MB of memory

        refusal = mcp_endpoint.transport_refusal(headers, self.bridge.settings.mcp_allowed_origins, self.bind_host)
        if refusal is not None:
            return self._mcp_reply(refusal)
        try:
            raw = self._read_body(environ)
            principal = self._authenticate(environ)
        except BridgeError as error:
            if error.http_status in (401, 403):
                self._audit_refusal(None, None, request_id, error, None, operation="mcp")
            return self._error(error)

        def run_tool(command: Command, arguments: dict[str, Any]) -> dict[str, Any]:
            return self._execute(command, principal, request_id, arguments)

        reply = mcp_endpoint.handle(raw, headers, run_tool, request_id)
        self.metrics.mcp_requests.labels(method=reply.method, version=reply.version, tool=reply.tool or "",
                                         code=reply.code).inc()
        return self._mcp_reply(reply)

    def _mcp_reply(self, reply: Reply) -> bytes:
        """Send an MCP reply; a tool call counts in the request metrics as its command, with its result code."""
        environ = bottle.request.environ
        environ["bridge.command"] = reply.tool or "mcp"
        environ["bridge.code"] = reply.code
        bottle.response.status = reply.status
        if reply.body is None:
            environ["bridge.bodyless"] = True  # 202: no body, so no content type either
            return b""
        bottle.response.content_type = JSON
        return to_json(reply.body)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = self.bridge.settings.max_body
        length_header = environ.get("CONTENT_LENGTH") or ""
        try:
            length = int(length_header) if length_header else None
        except ValueError as exc:
            raise InvalidArgument("Content-Length is not a number", {"reason": Reason.BAD_CONTENT_LENGTH}) from exc
        if length is not None and length > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes", {"limit": limit})
        stream = environ["wsgi.input"]
        raw = stream.read(min(length, limit + 1)) if length is not None else stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes", {"limit": limit})
        if raw:
            media_type = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
            if media_type != JSON:
                raise UnsupportedMediaType("body must be application/json", {"content_type": media_type or None})
        return raw

    def _authenticate(self, environ: dict[str, Any]) -> Principal:
        try:
            principal = self.verifier.verify(_bearer_token(environ))
        except Unauthorized as error:
            self.metrics.auth_failures.labels(reason=error.details.get("reason", "invalid")).inc()
            raise
        if principal.workspace_id != self.bridge.workspace:
            self.metrics.auth_failures.labels(reason="workspace_mismatch").inc()
            raise WorkspaceMismatch("token workspace does not match this bridge's workspace",
                                    {"token_workspace": principal.workspace_id, "agent_id": principal.agent_id})
        return principal

    def _audit_refusal(self, command: Command | None, principal: Principal | None, request_id: str,
                       error: BridgeError, thread_id: str | None, operation: str | None = None) -> None:
        """Audit a 401/403, charged to the verified agent or else to the client address (`audit_refusal`)."""
        address = bottle.request.environ.get("REMOTE_ADDR")
        actor = principal or Principal(agent_id=str(error.details.get("agent_id", "anonymous")),
                                       workspace_id=self.bridge.workspace, role=Role.UNAUTHENTICATED, session_id="-")
        audit_refusal(self.bridge, Call(actor, request_id), operation or (command.name if command else "unknown"),
                      error, key=refusal_key(principal.agent_id if principal else None, address),
                      thread_id=thread_id)

    def _error(self, error: BridgeError) -> bytes:
        environ = bottle.request.environ
        environ["bridge.code"] = error.code
        bottle.response.status = error.http_status
        bottle.response.content_type = JSON
        for name, value in error_headers(error):
            bottle.response.set_header(name, value)
        return error_body(error, environ["bridge.request_id"])

    # ------------------------------------------------------------------------------------------- operations
    def health(self) -> bytes:
        bottle.request.environ["bridge.command"] = "health"
        bottle.response.content_type = JSON
        beat = self.bridge.store.read(lambda conn: control_store.get_flag(conn, "worker_heartbeat"))
        age = None if beat is None else max(0.0, round(time.time() - float(beat), 3))
        return to_json({"status": "ok", "version": bridge_pkg.__version__, "workspace": self.bridge.workspace,
                        "worker": {"last_tick_age_seconds": age}, "frozen": freeze_state(self.bridge),
                        "pid": os.getpid()})

    def ready(self) -> bytes:
        bottle.request.environ["bridge.command"] = "ready"
        checks: dict[str, str] = {}
        try:
            version = self.bridge.store.schema_version()
            checks["database"] = "ok"
            checks["migrations"] = "ok" if version == latest_version() else f"schema {version}, code {latest_version()}"
        except BridgeError as exc:
            checks["database"] = exc.message
            checks["migrations"] = "unknown"
        checks["data_dir"] = _writable(self.bridge.settings.data_dir)
        failure = self.bridge.store.check_storage()  # while writes fail: a probe write at most once a second
        checks["storage"] = "ok" if failure is None else f"writes failing: {failure.reason}"
        failing = [name for name, state in checks.items() if state != "ok"]
        if failing:
            details: dict[str, Any] = {"checks": checks, "failing": failing}
            if failure is not None:
                details["storage"] = {"reason": failure.reason, "since": iso(int(failure.since * 1000)),
                                      "last_failure_at": iso(int(failure.last * 1000))}
            return self._error(Unavailable("not ready: " + ", ".join(failing), details))
        bottle.response.content_type = JSON
        return to_json({"ready": True, "checks": checks})

    def metrics_page(self) -> bytes:
        environ = bottle.request.environ
        environ["bridge.command"] = "metrics"
        try:
            loopback = ipaddress.ip_address(environ.get("REMOTE_ADDR") or "127.0.0.1").is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return self._error(NotFound("not found", {}))
        bottle.response.content_type = "text/plain; version=0.0.4; charset=utf-8"
        return self.metrics.render()

    def openapi_doc(self) -> bytes:
        bottle.request.environ["bridge.command"] = "openapi"
        bottle.response.content_type = JSON
        return self.openapi

    def jwks(self) -> bytes:
        """The public key of the local issuer this process verifies with (`bridge token issue --url` compares it)."""
        bottle.request.environ["bridge.command"] = "jwks"
        bottle.response.content_type = JSON
        key = self.verifier.local_key
        return to_json({"keys": [] if key is None else [key.public_jwk()]})

    def framework_error(self, error: bottle.HTTPError) -> bytes:
        """bottle's own errors (unknown route, wrong method, ...) in the JSON envelope."""
        if error.status_code == 405:
            allowed = error.headers.get("Allow", "")
            mapped: BridgeError = MethodNotAllowed("method not allowed", {"allow": allowed})
        else:
            cls = _FRAMEWORK_ERRORS.get(error.status_code, Internal)
            mapped = cls("not found" if cls is NotFound else ("internal error" if cls is Internal else str(error.body)))
        if isinstance(mapped, Internal):
            log.error("unhandled error", exc_info=error.exception,
                      extra={"event": "internal_error", "request_id": bottle.request.environ.get("bridge.request_id")})
        return self._error(mapped)


def _bearer_token(environ: dict[str, Any]) -> str:
    scheme, _, token = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing or malformed Authorization header (expected: Bearer <JWT>)",
                           {"reason": Reason.MISSING_CREDENTIALS})
    return token.strip()


def _request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's HTTP headers keyed by lower-case name (`HTTP_MCP_PROTOCOL_VERSION` -> `mcp-protocol-version`)."""
    return {key[5:].lower().replace("_", "-"): value for key, value in environ.items() if key.startswith("HTTP_")}


def _writable(directory: Path) -> str:
    """`ok` when a file can be created in `directory` (a real probe: root passes every os.access check)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ready-"):
            return "ok"
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror or exc}"


def create_app(bridge: Bridge, verifier: TokenVerifier, metrics: Metrics | None = None, *,
               bind_host: str | None = None) -> RequestIdMiddleware:
    """Build the WSGI application for one bridge; `bind_host` is where it listens (default: the settings' host)."""
    metrics = metrics or Metrics(bridge)
    api = Api(bridge, verifier, metrics, bridge.settings.host if bind_host is None else bind_host)
    app = bottle.Bottle(catchall=True)
    app.route("/v1/mcp/<name>", "POST", api.command)
    app.route("/mcp", "POST", api.mcp)
    app.route("/health", "GET", api.health)
    app.route("/ready", "GET", api.ready)
    app.route("/metrics", "GET", api.metrics_page)
    app.route("/v1/openapi.json", "GET", api.openapi_doc)
    app.route("/.well-known/jwks.json", "GET", api.jwks)
    for status in (400, 404, 405, 413, 415, 500):
        app.error(status)(api.framework_error)
    return RequestIdMiddleware(app, metrics)


class RequestIdMiddleware:
    """Every response gets `x-request-id`; metrics and one log line per request; last-resort JSON 500."""

    def __init__(self, app: bottle.Bottle, metrics: Metrics):
        self.app, self.metrics = app, metrics
        # The labelled children, looked up once per label set (prometheus' `labels()` costs ~5 us a call).
        self._request_counters: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["bridge.request_id"] = request_id
        started = time.perf_counter()
        status_line = ["500 Internal Server Error"]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_line[0] = status
            dropped = {"x-request-id", "content-type"} if environ.get("bridge.bodyless") else {"x-request-id"}
            headers = [(k, v) for k, v in headers if k.lower() not in dropped] + [("x-request-id", request_id)]
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start)
        except Exception:
            log.exception("unhandled error", extra={"event": "internal_error", "request_id": request_id})
            error = Internal("internal error")
            payload = error_body(error, request_id)
            start_response("500 Internal Server Error", [("Content-Type", JSON), ("x-request-id", request_id),
                                                         ("Content-Length", str(len(payload)))])
            body = [payload]
        command = environ.get("bridge.command", "unknown")
        code = environ.get("bridge.code") or ("OK" if status_line[0].startswith("2") else status_line[0][:3])
        elapsed = time.perf_counter() - started
        self._count(command, code, elapsed)
        if log.isEnabledFor(logging.DEBUG) or code != "OK":
            log.log(logging.INFO if code != "INTERNAL" else logging.ERROR, "request",
                    extra={"event": "request", "request_id": request_id, "command": command, "code": code,
                           "method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                           "duration_ms": round(elapsed * 1000, 3)})
        return body

    def _count(self, command: str, code: str, elapsed: float) -> None:
        """One request in `bridge_requests_total` and `bridge_request_duration_seconds` (both label sets are
        bounded: known commands or `unknown`, and result codes)."""
        counter = self._request_counters.get((command, code))
        if counter is None:
            counter = self._request_counters[(command, code)] = self.metrics.requests.labels(command=command,
                                                                                              code=code)
        duration = self._durations.get(command)
        if duration is None:
            duration = self._durations[command] = self.metrics.duration.labels(command=command)
        counter.inc()
        duration.observe(elapsed)
