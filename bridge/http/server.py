"""Run the WSGI app under waitress with the limits of SPEC §8/§12."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from bridge.errors import BridgeError, Internal, InvalidArgument, PayloadTooLarge
from bridge.http.app import JSON, create_app
from bridge.http.envelope import error_body, request_id_from
from bridge.wiring import Parts

log = logging.getLogger("bridge.http")


class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (body or headers over the limit, an unparsable request: answered before the app
    runs) in the JSON envelope with an `x-request-id`, like every other response; the HTTP status is waitress's."""

    def execute(self) -> None:
        problem = self.request.error
        cls: type[BridgeError] = {413: PayloadTooLarge, 500: Internal}.get(problem.code, InvalidArgument)
        if cls is PayloadTooLarge:  # the same words as the app's own check
            limit = self.channel.adj.max_request_body_size - 1  # see make_server
            error = cls(f"body exceeds {limit} bytes", {"limit": limit})
        else:
            message = "internal error" if cls is Internal else f"{problem.reason.lower()}: {problem.body}"
            error = cls(message, {"reason": problem.reason})
        request_id = request_id_from(self.request.headers.get("X_REQUEST_ID"))
        body = error_body(error, request_id)
        self.status = f"{problem.code} {problem.reason}"
        self.response_headers.extend([("Content-Type", JSON), ("x-request-id", request_id)])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


def make_server(parts: Parts, *, host: str | None = None, port: int | None = None, **overrides: Any) -> Any:
    """A waitress server for the bridge (not yet serving); `port=0` picks a free port."""
    settings = parts.bridge.settings
    options: dict[str, Any] = {
        "host": settings.host if host is None else host,
        "port": settings.port if port is None else port,
        "threads": settings.threads,
        "max_request_body_size": settings.max_body + 1,  # waitress refuses a body of this size or more
        "max_request_header_size": settings.max_header,
        "connection_limit": max(100, settings.threads * 4),
        "channel_timeout": 60,
        "cleanup_interval": 10,
        "ident": "bridge",
        "clear_untrusted_proxy_headers": True,
    }
    options.update(overrides)
    servers: dict[Any, Any] = {}
    app = create_app(parts.bridge, parts.verifier, bind_host=options["host"])
    server = create_server(app, map=servers, **options)
    for listener in servers.values():  # one per listening socket; only servers are in the map before run()
        listener.channel_class = _JsonErrorChannel
    return server


def shutdown(server: Any) -> None:
    """Stop waitress's task threads, then close the sockets from inside the server's own loop.

    Closing from another thread raced a finishing task (which still pulls the server's trigger) and the loop's
    select(); closing in the loop also wakes it, so `run()` returns at once. Directly when no loop is running.
    """
    dispatcher = getattr(server, "task_dispatcher", None)
    if dispatcher is not None:
        dispatcher.shutdown(cancel_pending=True, timeout=5)
    trigger = getattr(server, "trigger", None)
    if trigger is not None and not getattr(trigger, "_closed", True):
        closed = threading.Event()

        def close_in_loop() -> None:
            server.close()
            closed.set()

        try:
            trigger.pull_trigger(close_in_loop)
        except OSError:  # the loop already closed its trigger: nothing left to wake
            pass
        else:
            if closed.wait(2):
                return
    server.close()


def serve_forever(parts: Parts, *, on_start: Callable[[Any], None] | None = None, with_worker: bool = True) -> None:
    """Serve (and, unless told otherwise, run the supervisor worker) until SIGINT/SIGTERM; then stop both."""
    server = make_server(parts)
    stop = threading.Event()
    worker_thread = None
    if with_worker:
        from bridge.worker.supervisor import Supervisor

        supervisor = Supervisor(parts.bridge)
        supervisor.url = f"http://{server.effective_host}:{server.effective_port}"
        worker_thread = threading.Thread(target=supervisor.run, args=(stop,), name="bridge-worker", daemon=True)

    def handle(signum: int, frame: Any) -> None:
        stop.set()
        server.trigger.pull_trigger(server.close)  # close from inside the server's loop, which then returns

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if worker_thread is not None:
        worker_thread.start()
    if on_start is not None:
        on_start(server)
    try:
        server.run()
    except (OSError, ValueError):
        if not stop.is_set():
            raise
    finally:
        stop.set()
        if worker_thread is not None:
            supervisor.nudge.set()
            worker_thread.join(timeout=15)
        shutdown(server)
