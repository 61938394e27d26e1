"""In-process parts served for real: waitress in a thread of this process on 127.0.0.1 (for tests of in-process
parts, the in-process load server and the wake-latency benchmark; everything else runs `bridge serve`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bridge.testing.processes import HOST

if TYPE_CHECKING:
    from bridge.wiring import Parts


@contextlib.contextmanager
def waitress_thread(parts: Parts) -> Iterator[int]:
    """`parts` served by waitress in a thread (port 0: any free one; listening on return); its port; stopped and
    joined on exit."""
    from bridge.http.server import make_server, shutdown

    server = make_server(parts, host=HOST, port=0)
    runner = threading.Thread(target=server.run, name="waitress", daemon=True)
    runner.start()
    try:
        yield int(server.effective_port)
    finally:
        shutdown(server)
        runner.join(timeout=10)
