"""Real agent runtimes on the bridge: how Claude Code and Codex are configured, launched, resumed and spawned."""

from __future__ import annotations

import importlib

from bridge.agents.base import AgentPlan, AgentSpec

RUNTIMES = ("claude", "codex")


def prepare(kind: str, spec: AgentSpec) -> AgentPlan:
    """Write the agent's configuration for runtime `kind` and return how the bridge runs it."""
    return _module(kind).prepare(spec)


def discover_session_id(kind: str, plan: AgentPlan, since: float) -> str | None:
    """The id of the session a runtime that names its own sessions started at or after `since` (unix time)."""
    return _module(kind).discover_session_id(plan, since) if kind in RUNTIMES else None


def _module(kind: str):  # type: ignore[no-untyped-def]
    if kind not in RUNTIMES:
        raise ValueError(f"unknown runtime {kind!r} (expected one of {', '.join(RUNTIMES)})")
    return importlib.import_module(f"bridge.agents.{kind}")
