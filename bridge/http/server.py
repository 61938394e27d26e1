"""Run the WSGI app under waitress with the limits of bridge/settings.py.

Connection slots are defended here (waitress alone lets a client keep its slot by trickling one byte at a time, as
every byte resets `channel_timeout`, and a full table of such clients locks every new request out):
- read deadline: a request must arrive in full within `BRIDGE_REQUEST_READ_TIMEOUT` of its first byte (or of the
  connection's opening, for a connection that sends nothing); whitespace between requests does not start one, and a
  kept-alive connection idle for `channel_timeout` since its last response is closed whatever bytes it trickles;
- at the connection limit, the connection that has waited longest without delivering a request (idle, silent or
  still trickling) is closed so a new one gets in. Connections whose request is being served are never touched.
Loopback peers get no exemption.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from bridge.errors import BridgeError, Internal, InvalidArgument, PayloadTooLarge
from bridge.http.app import JSON, create_app
from bridge.http.envelope import error_body, request_id_from
from bridge.http.metrics import Metrics
from bridge.http.peers import CommitPeers
from bridge.settings import DEFAULTS
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


class _TimedParser(HTTPRequestParser):
    """waitress's request parser, noting when the request's first non-whitespace byte arrived."""

    started: float | None = None

    def received(self, data: bytes) -> int:
        if self.started is None and data.strip():  # blank lines before a request are skipped, not a request
            self.started = time.time()
        return int(super().received(data))


class _BridgeChannel(HTTPChannel):
    """A connection: JSON refusals, and closed when it holds its slot without delivering a request in time."""

    error_task_class = _JsonErrorTask
    parser_class = _TimedParser
    server: _BridgeServer
    request: _TimedParser | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0
        self.idle_since: float | None = self.creation_time  # None while a request is being served

    def service(self) -> None:  # a task thread
        self.served += 1
        self.idle_since = None
        try:
            super().service()
        finally:
            self.idle_since = time.time()
            if not self.server.accepting:  # stopping: no keep-alive past this response
                self.close_when_flushed = True
                self.server.pull_trigger()

    def handle_close(self) -> None:
        super().handle_close()
        if not self.server.accepting:
            self.server.close_when_quiet()

    def waiting_since(self) -> float | None:
        """Since when this connection holds its slot without delivering a request; None when it is busy (a request
        being served or queued, a response being sent, closing)."""
        if (self.requests or self.idle_since is None or self.will_close or self.close_when_flushed
                or self.total_outbufs_len):
            return None
        request = self.request
        if request is not None and request.started is not None:
            return request.started
        return self.idle_since

    def overdue(self, now: float) -> bool:
        """True when the current request has not arrived within the read deadline (or a kept-alive connection has
        been idle longer than `channel_timeout`)."""
        since = self.waiting_since()
        if since is None:
            return False
        request = self.request
        started = request is not None and request.started is not None
        limit = self.server.read_timeout if started or not self.served else self.adj.channel_timeout
        return now - since > limit

    def readable(self) -> bool:  # the server's loop, every iteration (at least once per asyncore_loop_timeout)
        if self.overdue(time.time()):
            self.server.drop(self, "read_timeout")
        elif not self.server.accepting and self.waiting_since() is not None:  # stopping: idle connections go now
            self.will_close = True
        return bool(super().readable())


class _BridgeServer(TcpWSGIServer):
    """A listening socket that, at the connection limit, makes room by closing the longest-waiting idle or slow
    connection instead of refusing to accept."""

    channel_class = _BridgeChannel
    read_timeout: float = DEFAULTS.request_read_timeout
    eviction_log_interval: float = DEFAULTS.eviction_log_interval  # between two warnings about the limit
    metrics: Metrics | None = None
    _last_eviction_log = 0.0

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:  # waitress's own idle sweep (channel_timeout)
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        if len(self._map) < self.adj.connection_limit:
            return True
        self._make_room(now)
        return False  # accept once the evicted connection is gone (the same or the next loop iteration)

    def _make_room(self, now: float) -> None:
        channels = [c for c in self._map.values() if isinstance(c, _BridgeChannel)]
        if any(c.will_close for c in channels):
            return  # a connection is already on its way out
        waiting = [(since, c) for c in channels if (since := c.waiting_since()) is not None]
        if not waiting:
            return  # every connection is being served: wait, as waitress does
        victim = min(waiting, key=lambda item: item[0])[1]
        self.drop(victim, "evicted")
        if now - self._last_eviction_log >= self.eviction_log_interval:
            self._last_eviction_log = now
            log.warning("connection limit reached: closing idle or slow connections to accept new ones",
                        extra={"connection_limit": self.adj.connection_limit})

    def stop_accepting(self) -> None:
        """In the server's loop: close the listening socket only (task threads still pull the trigger); idle
        connections then close, busy ones after their response, and the loop ends with the last of them."""
        wasyncore.dispatcher.close(self)
        self.close_when_quiet()

    def close_when_quiet(self) -> None:
        """Close the trigger (which ends the loop) once no connection is left."""
        if not any(isinstance(c, _BridgeChannel) for c in self._map.values()):
            self.trigger.close()

    def drop(self, channel: _BridgeChannel, reason: str) -> None:
        """Close a connection that has not delivered a request (closed by the loop when it sees `will_close`)."""
        channel.will_close = True
        if self.metrics is not None:
            self.metrics.connections_dropped.labels(reason=reason).inc()


def make_server(parts: Parts, *, host: str | None = None, port: int | None = None,
                sock: socket.socket | None = None, **overrides: Any) -> Any:
    """A waitress server for the bridge (not yet serving); `port=0` picks a free port. With `sock`, it serves that
    listening socket instead (bound by `bridge serve --processes`, shared by every serving process)."""
    settings = parts.bridge.settings
    address = {"host": settings.host if host is None else host, "port": settings.port if port is None else port}
    options: dict[str, Any] = {
        **(address if sock is None else {"sockets": [sock]}),
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
    metrics = Metrics(parts.bridge)
    app = create_app(parts.bridge, parts.verifier, metrics,
                     bind_host=options["host"] if sock is None else sock.getsockname()[0])
    adj = Adjustments(**options)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers: dict[Any, Any] = {}
    if sock is None:
        listeners = [_BridgeServer(app, servers, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen]
    else:
        info = (sock.family, sock.type, sock.proto, sock.getsockname())
        listeners = [_BridgeServer(app, servers, True, sock, dispatcher=dispatcher, adj=adj, sockinfo=info,
                                   bind_socket=False)]
    for listener in listeners:
        listener.read_timeout, listener.metrics = settings.request_read_timeout, metrics
        listener.eviction_log_interval = settings.eviction_log_interval
    if len(listeners) == 1:
        return listeners[0]
    return MultiSocketServer(servers, adj, [(li.effective_host, li.effective_port) for li in listeners],
                             dispatcher, listeners[0].log_info)


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


def serve_forever(parts: Parts, *, on_start: Callable[[Any], None] | None = None, with_worker: bool = True,
                  sock: socket.socket | None = None, peers: CommitPeers | None = None) -> None:
    """Serve (and, unless told otherwise, run the supervisor worker, elected among the serving processes) until
    SIGINT/SIGTERM; then stop both. `sock` and `peers`: one of the processes of `bridge serve --processes`."""
    server = make_server(parts, sock=sock)
    stop = threading.Event()
    worker_thread = None
    supervisor = None
    if with_worker:
        from bridge.worker.supervisor import Supervisor

        supervisor = Supervisor(parts.bridge)
        supervisor.url = f"http://{server.effective_host}:{server.effective_port}"
        worker_thread = threading.Thread(target=supervisor.run, args=(stop,), kwargs={"elect": True},
                                         name="bridge-worker", daemon=True)
    if peers is not None:
        parts.bridge.store.commit_listeners.append(peers.announce)
        nudge = supervisor.nudge.set if supervisor is not None else None
        peers.listen(parts.bridge.store.committed_elsewhere, nudge)

    def stop_serving() -> None:  # in the server's loop: no new connections, idle ones close, long-polls answer
        getattr(server, "stop_accepting", server.close)()
        parts.bridge.store.end_waits()

    def handle(signum: int, frame: Any) -> None:
        stop.set()
        server.trigger.pull_trigger(stop_serving)  # the loop returns once every connection is closed

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
        if supervisor is not None and worker_thread is not None:
            supervisor.nudge.set()
            worker_thread.join(timeout=15)
        shutdown(server)
