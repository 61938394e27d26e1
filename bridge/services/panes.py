"""The port the runtime services start, probe and stop agents' panes through, with its errors and the pane it finds.

`bridge.worker.tmux.Tmux` is the adapter (the only code that runs tmux); the edge that calls a service (a CLI
command, the worker) passes it in, so no service imports the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class TmuxError(Exception):
    """A tmux command failed or timed out."""


class TmuxUnavailable(TmuxError):
    """tmux gave no answer at all (timed out, could not be started): nothing is known about the target."""


@dataclass(frozen=True)
class Pane:
    """What a probe of a pane target found."""

    pane_id: str
    session: str
    dead: bool
    in_mode: bool
    last_input: float | None = None  # latest key press of a client attached to the pane's session (unix time)


class Panes(Protocol):
    """What launching, probing and stopping an agent's runtime needs of the terminal multiplexer."""

    socket_name: str | None

    def probe(self, target: str) -> Pane | None:
        """The pane a target names, or None when it does not exist; TmuxUnavailable when there is no answer."""
        ...

    def new_window(self, session: str, window_name: str, argv: Sequence[str], *, cwd: str | None = None,
                   env: Mapping[str, str] | None = None) -> str:
        """Start `argv` (no shell) in a new window of `session`; return its pane target."""
        ...

    def exit_status(self, target: str) -> int | None:
        """How a pane's command ended (-1: ended, status unknown), or None while it runs or when it is gone."""
        ...

    def capture(self, target: str, lines: int = 200) -> str:
        """The visible text of a pane plus some history."""
        ...

    def kill_pane(self, target: str) -> None:
        """Kill a pane."""
        ...
