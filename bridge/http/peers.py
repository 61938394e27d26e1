"""Commit announcements between the processes of `bridge serve --processes N`.

Each process slot has a pipe. A process writes one byte into every other slot's pipe after each of its commits and
reads its own pipe in a thread: a byte means another process committed, so its long-polls look again and its worker
(if leading) ticks. Announcing costs one non-blocking write per peer and commit; a full pipe is skipped (its reader
has a wake-up pending anyway). The parent creates every pipe before forking and keeps them all open, so a restarted
process takes over its slot's pipe and a write to a dead process's pipe never fails.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable


class CommitPeers:
    """The pipes of `count` process slots; each process `join`s one slot after the fork."""

    def __init__(self, count: int):
        self.pipes = [os.pipe() for _ in range(count)]
        for _, write_end in self.pipes:
            os.set_blocking(write_end, False)
        self.slot: int | None = None

    def join(self, slot: int) -> None:
        """In a forked process: announce to every slot but `slot`, and listen on `slot`'s pipe."""
        self.slot = slot

    def announce(self) -> None:
        """This process committed: wake every other process."""
        for index, (_, write_end) in enumerate(self.pipes):
            if index != self.slot:
                with contextlib.suppress(BlockingIOError):
                    os.write(write_end, b"\0")

    def listen(self, *callbacks: Callable[[], None] | None) -> None:
        """Call each callback (None skipped) whenever other processes announce commits, in a daemon thread;
        announcements that arrive together are answered once."""
        assert self.slot is not None, "join a slot first"
        read_end = self.pipes[self.slot][0]
        wanted = [callback for callback in callbacks if callback is not None]

        def loop() -> None:
            while os.read(read_end, 4096):
                for callback in wanted:
                    callback()

        threading.Thread(target=loop, name="bridge-commit-peers", daemon=True).start()

    def close(self) -> None:
        """Close every pipe (the parent, once all processes are gone)."""
        for read_end, write_end in self.pipes:
            for fd in (read_end, write_end):
                with contextlib.suppress(OSError):
                    os.close(fd)
