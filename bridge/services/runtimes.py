"""Use cases on the runtime registry: list, pause/resume, launch into tmux, stop (operators); offline,
spawned and learned sessions (the worker).

The panes come from the caller (`Panes`: the tmux adapter the CLI or worker holds)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NoReturn

from bridge.agents.base import AgentPlan
from bridge.domain import wake
from bridge.domain.identifiers import iso
from bridge.domain.vocabulary import Reason
from bridge.errors import NotFound, Unavailable
from bridge.services.command_lines import command_env, isolated
from bridge.services.core import Bridge, Call, Pending, audit, audited_write
from bridge.services.panes import Pane, Panes, TmuxError, TmuxUnavailable
from bridge.store import control as control_store
from bridge.store.engines import Connection


def runtime_view(session: dict[str, Any], now: int, stale_after: float) -> dict[str, Any]:
    """A registry entry for operators."""
    return {
        "agent_id": session["agent_id"], "session_id": session["session_id"], "runtime": session["runtime"],
        "kind": session["runtime_kind"], "status": session["status"], "management_mode": session["management_mode"],
        "tmux_target": session["tmux_target"], "host_id": session["host_id"], "resumable": bool(session["resumable"]),
        "paused": bool(session["paused"]), "stale": wake.is_stale(session, now, stale_after),
        "last_heartbeat_at": iso(session["last_heartbeat_at"]), "cwd": session["cwd"],
    }


def list_runtimes(bridge: Bridge) -> list[dict[str, Any]]:
    """Every agent in the runtime registry."""
    now = bridge.clock()
    return [runtime_view(s, now, bridge.settings.session_stale)
            for s in bridge.store.read(lambda conn: control_store.list_sessions(conn, bridge.workspace))]


def set_paused(bridge: Bridge, call: Call, agent_id: str, paused: bool, reason: str) -> dict[str, Any]:
    """Pause (triggers defer) or resume an agent's runtime; audited."""
    operation = "runtime_pause" if paused else "runtime_resume"

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        before = control_store.get_session(conn, bridge.workspace, agent_id)
        if before is None:
            raise NotFound("no runtime registered for this agent", {"agent_id": agent_id})
        control_store.set_session_fields(conn, bridge.workspace, agent_id, paused=int(paused))
        audit(conn, bridge, call, operation, reason=reason,
              details={"agent_id": agent_id, "before": bool(before["paused"]), "after": paused})
        pending.emit("runtime_pause_changed", agent_id=agent_id, paused=paused)  # the worker re-checks deferred jobs
        return {"agent_id": agent_id, "paused": paused}

    return audited_write(bridge, call, operation, None, work)


def launch(bridge: Bridge, call: Call, tmux: Panes, *, agent_id: str, kind: str, argv: Sequence[str],
           session_id: str, tmux_session: str | None, cwd: str | None, resumable: bool,
           profile: AgentPlan | None = None, url: str | None = None) -> dict[str, Any]:
    """Start `argv` in a window named for the agent in the workspace's tmux session; register it as managed.

    With a runtime `profile` (`bridge agent up`) the window runs under exactly the agent's own environment, and the
    profile is registered so the worker resumes and spawns the agent the same way."""
    session_name = tmux_session or bridge.settings.workspace_tmux_session
    context = {"BRIDGE_URL": url or bridge.settings.url, "BRIDGE_AGENT_ID": agent_id,
               "BRIDGE_WORKSPACE": bridge.workspace}
    try:
        if profile is None:
            pane_id = tmux.new_window(session_name, agent_id, list(argv), cwd=cwd, env=context)
        else:
            pane_id = tmux.new_window(session_name, agent_id, isolated(argv, command_env(profile.env, context)),
                                      cwd=cwd)
        exited = _exit_at_once(tmux, pane_id, bridge.settings.launch_settle)
    except TmuxError as exc:
        _refuse_launch(bridge, call, agent_id, argv, "tmux_error", str(exc), {})
    if exited is not None:
        status, output = exited
        _refuse_launch(bridge, call, agent_id, argv, "runtime_exited", f"the command exited at once (status {status})",
                       {"exit_status": status, "output": output})

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        control_store.upsert_session(conn, {
            "workspace_id": bridge.workspace, "agent_id": agent_id, "session_id": session_id, "runtime": kind,
            "runtime_kind": kind, "status": "idle", "resumable": int(resumable), "management_mode": "managed",
            "tmux_target": pane_id, "cwd": cwd, "now": bridge.clock(), "host_id": bridge.settings.local_host_id,
            "profile": profile.to_json() if profile else None})
        audit(conn, bridge, call, "runtime_launch", details={"agent_id": agent_id, "kind": kind, "argv": list(argv),
                                                             "tmux_target": pane_id, "session_id": session_id,
                                                             "profile": profile is not None})
        return {"agent_id": agent_id, "tmux_target": pane_id, "tmux_session": session_name, "session_id": session_id}

    return audited_write(bridge, call, "runtime_launch", None, work)


def probe(tmux: Panes, target: str) -> Pane | None:
    """The pane a target names, or None when it is gone; UNAVAILABLE when tmux does not answer."""
    try:
        return tmux.probe(target)
    except TmuxUnavailable as exc:
        raise Unavailable("tmux did not answer; try again",
                          {"reason": Reason.TMUX_UNAVAILABLE, "detail": str(exc)}) from exc


def _exit_at_once(tmux: Panes, pane_id: str, settle: float) -> tuple[int, str] | None:
    """(exit status, last output) when the command ended within `settle` seconds (its dead pane is removed), else
    None: a launch that cannot even start is reported to the operator, not registered."""
    deadline = time.monotonic() + settle
    ended = None
    while time.monotonic() < deadline and (ended is None or ended < 0):  # -1: ended, status not (yet) recorded
        ended = tmux.exit_status(pane_id)
        time.sleep(0.05)
    if ended is None:
        return None
    output = "\n".join([line for line in tmux.capture(pane_id).splitlines() if line.strip()][-10:])
    tmux.kill_pane(pane_id)
    return ended, output


def _refuse_launch(bridge: Bridge, call: Call, agent_id: str, argv: Sequence[str], reason: str, message: str,
                   details: dict[str, Any]) -> NoReturn:
    """Audit a launch that did not start, then raise it (typed, with the command's own words)."""
    bridge.store.write(lambda conn: audit(conn, bridge, call, "runtime_launch", outcome="failed", reason=reason,
                                          details={"agent_id": agent_id, "argv": list(argv), **details}))
    raise Unavailable(message, {"reason": reason, "agent_id": agent_id, **details})


def mark_offline(bridge: Bridge, call: Call, agent_id: str, target: str | None, code: str) -> None:
    """Mark a managed runtime whose pane is missing or dead (`code`) offline; audited when it was not already."""
    def work(conn: Connection) -> None:
        if control_store.set_session_fields(conn, bridge.workspace, agent_id, status="offline"):
            audit(conn, bridge, call, "runtime_offline", reason=code,
                  details={"agent_id": agent_id, "tmux_target": target})

    bridge.store.write(work)


def register_spawned(bridge: Bridge, session: dict[str, Any] | None, *, agent_id: str, kind: str, session_id: str,
                     trigger_id: str, pane_id: str, cwd: str | None, now: int) -> None:
    """Register the session a wake spawned in `pane_id` as the agent's managed runtime: resumable when it runs
    under a session id the bridge chose (`session_id` "" = not known yet, learned once it acts)."""
    bridge.store.write(lambda conn: control_store.upsert_session(conn, {
        "workspace_id": bridge.workspace, "agent_id": agent_id, "session_id": session_id or f"pending-{trigger_id}",
        "runtime": session["runtime"] if session else "generic", "runtime_kind": kind, "status": "idle",
        "resumable": int(kind in wake.UUID_RUNTIMES and bool(session_id)), "management_mode": "managed",
        "tmux_target": pane_id, "cwd": cwd, "now": now, "host_id": bridge.settings.local_host_id}))


def learn_session_id(bridge: Bridge, call: Call, *, agent_id: str, before: str, session_id: str, thread_id: str,
                     trigger_id: str) -> None:
    """Record the id a runtime that names its own sessions gave the agent's session (now resumable); audited."""
    def work(conn: Connection) -> None:
        control_store.set_session_fields(conn, bridge.workspace, agent_id, session_id=session_id, resumable=1)
        audit(conn, bridge, call, "runtime_session_learned", thread_id=thread_id,
              details={"agent_id": agent_id, "before": before, "session_id": session_id, "trigger_id": trigger_id})

    bridge.store.write(work)


def stop(bridge: Bridge, call: Call, tmux: Panes, agent_id: str, reason: str) -> dict[str, Any]:
    """Kill the agent's managed pane and mark it offline; audited."""
    session = bridge.store.read(lambda conn: control_store.get_session(conn, bridge.workspace, agent_id))
    if session is None:
        raise NotFound("no runtime registered for this agent", {"agent_id": agent_id})
    killed = False
    if session["management_mode"] == "managed" and session["tmux_target"] and probe(tmux, session["tmux_target"]):
        tmux.kill_pane(session["tmux_target"])
        killed = True

    def work(conn: Connection, pending: Pending) -> dict[str, Any]:
        control_store.set_session_fields(conn, bridge.workspace, agent_id, status="offline")
        audit(conn, bridge, call, "runtime_stop", reason=reason,
              details={"agent_id": agent_id, "tmux_target": session["tmux_target"], "killed": killed})
        return {"agent_id": agent_id, "status": "offline", "killed_pane": killed}

    return audited_write(bridge, call, "runtime_stop", None, work)
