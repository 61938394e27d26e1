"""A private tmux server for one harness run: its own socket, and every process it ran killed at the end."""

from __future__ import annotations

import contextlib
import secrets

from bridge.testing.processes import kill_pids
from bridge.worker.tmux import Tmux, TmuxError


class TmuxNotInstalled(RuntimeError):
    """The wake pipeline needs tmux (apt-get install tmux)."""


def socket_name(prefix: str = "bridge-test") -> str:
    """A fresh private socket name, `<prefix>-<hex>`."""
    return f"{prefix}-{secrets.token_hex(4)}"


def private_tmux(socket: str | None = None) -> Tmux:
    """The tmux adapter on a private socket (`tmux -L <socket>`, a fresh one by default); the server starts with
    its first session. Stop it with `stop_tmux`."""
    if not Tmux.available():
        raise TmuxNotInstalled("tmux is not installed: the wake pipeline needs it (apt-get install tmux)")
    return Tmux(socket or socket_name())


def tmux_pids(tmux: Tmux) -> list[int]:
    """The server's PID and every pane's process PID (empty when no server runs)."""
    pids: list[int] = []
    with contextlib.suppress(TmuxError, ValueError):
        pids.append(int(tmux.run("display-message", "-p", "#{pid}").strip()))
        pids += [int(p) for p in tmux.run("list-panes", "-a", "-F", "#{pane_pid}").split()]
    return pids


def stop_tmux(tmux: Tmux) -> dict[str, list[int]]:
    """Kill the server (and its socket file), then SIGKILL whichever of its processes outlived it; return what
    ran and what had to be killed (for evidence)."""
    pids = tmux_pids(tmux)
    tmux.kill_server()
    return {"pids": pids, "killed_after_timeout": kill_pids(pids)}
