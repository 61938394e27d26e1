"""Run the WSGI app under waitress with the limits of SPEC §8/§12."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from waitress.server import create_server

from bridge.http.app import create_app
from bridge.wiring import Parts

log = logging.getLogger("bridge.http")


def make_server(parts: Parts, *, host: str | None = None, port: int | None = None, **overrides: Any) -> Any:
    """A waitress server for the bridge (not yet serving); `port=0` picks a free port."""
    settings = parts.bridge.settings
    options: dict[str, Any] = {
        "host": settings.host if host is None else host,
        "port": settings.port if port is None else port,
        "threads": settings.threads,
        "max_request_body_size": settings.max_body,
        "max_request_header_size": settings.max_header,
        "connection_limit": max(100, settings.threads * 4),
        "channel_timeout": 60,
        "cleanup_interval": 10,
        "ident": "bridge",
        "clear_untrusted_proxy_headers": True,
    }
    options.update(overrides)
    return create_server(create_app(parts.bridge, parts.verifier), **options)


def shutdown(server: Any) -> None:
    """Stop accepting, close the sockets and stop waitress's task threads."""
    server.close()
    dispatcher = getattr(server, "task_dispatcher", None)
    if dispatcher is not None:
        dispatcher.shutdown(cancel_pending=True, timeout=5)


def serve_forever(parts: Parts, *, on_start: Any = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut down cleanly."""
    server = make_server(parts)
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()
        server.close()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if on_start is not None:
        on_start(server)
    try:
        server.run()
    except (OSError, ValueError):
        if not stop.is_set():
            raise
    finally:
        shutdown(server)
